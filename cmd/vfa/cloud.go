package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"vfa/phonehome"
)

// vfa cloud: the lab receiver of phone-home uploads (package phonehome,
// cloud.go; docs/phonehome.md).
func newCloud() *cobra.Command {
	var listen, certFile, keyFile, caFile, store, maxBody, maxDoc, logLevel string
	cmd := &cobra.Command{
		Use:   "cloud",
		Short: "run a lab phone-home receiver: TLS 1.3 only, client certificates from its CA, documents stored per array, a fleet page",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for flag, v := range map[string]string{"--cert": certFile, "--key": keyFile, "--client-ca": caFile, "--store": store} {
				if v == "" {
					return fmt.Errorf("%s is required", flag)
				}
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %v", logLevel, err)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			body, err := parseBytes("--max-body", maxBody)
			if err != nil {
				return err
			}
			doc, err := parseBytes("--max-document", maxDoc)
			if err != nil {
				return err
			}
			cert, pool, err := phonehome.LoadCloudTLS(certFile, keyFile, caFile)
			if err != nil {
				return err
			}
			cl, err := phonehome.NewCloud(phonehome.CloudConfig{Addr: listen, Certificate: cert, ClientCAs: pool, StoreDir: store,
				MaxBodyBytes: body, MaxDocumentBytes: doc, Logger: logger})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "vfa cloud: uploads to https://%s/upload, the fleet at https://%s/ and /api/fleet, stored in %s\n", cl.Addr(), cl.Addr(), store)
			fmt.Fprintf(out, "%d arrays known\n", len(cl.Fleet()))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = cl.Serve(ctx)
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", phonehome.DefaultCloudAddr, "address to listen on (HOST:PORT)")
	cmd.Flags().StringVar(&certFile, "cert", "", "the receiver's certificate (PEM; may include its chain)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the receiver's private key (PEM)")
	cmd.Flags().StringVar(&caFile, "client-ca", "", "CA certificate(s) that sign the arrays' client certificates (PEM)")
	cmd.Flags().StringVar(&store, "store", "", "directory where documents are stored, one subdirectory per array")
	cmd.Flags().StringVar(&maxBody, "max-body", "16M", "largest accepted upload (compressed); larger ones are answered 413")
	cmd.Flags().StringVar(&maxDoc, "max-document", "64M", "largest accepted document after decompression; larger ones are answered 413")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
