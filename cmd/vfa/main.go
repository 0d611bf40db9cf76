// Command vfa is the software FlashArray: one binary that creates an array
// (vfa init), runs it (vfa run), and carries the helper tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"vfa/array"
	"vfa/datapath"
	"vfa/iscsi"
	"vfa/mgmt"
	"vfa/phonehome"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vfa:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "vfa",
		Short:         "vfa is a software FlashArray",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newInit(), newRun(), newCloud())
	return root
}

type initFlags struct {
	adminKey           string
	name               string
	ssds               int
	ssdSize, nvramSize string
	auSize             string
}

func (f *initFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.name, "name", "", "array name (default: vfa-<random>)")
	cmd.Flags().IntVar(&f.ssds, "ssds", 8, "number of virtual SSDs (6-24)")
	cmd.Flags().StringVar(&f.ssdSize, "ssd-size", "4G", "size of each SSD (sparse file)")
	cmd.Flags().StringVar(&f.nvramSize, "nvram-size", "256M", "size of the NVRAM device")
	cmd.Flags().StringVar(&f.auSize, "au-size", "1M", "allocation unit size")
	cmd.Flags().StringVar(&f.adminKey, "admin-key", "", "public key file (OpenSSH authorized_keys format) for pureuser; without it a password is generated and printed once")
}

// create makes a new array in dir and sets up its administrator.
func (f *initFlags) create(dir string, out io.Writer) error {
	o, err := f.options()
	if err != nil {
		return err
	}
	var keys string
	if f.adminKey != "" {
		b, err := os.ReadFile(f.adminKey)
		if err != nil {
			return fmt.Errorf("--admin-key: %w", err)
		}
		keys = string(b)
	}
	cfg, err := array.Init(nil, dir, o)
	if err != nil {
		return err
	}
	a, err := array.Open(array.Options{Dir: dir})
	if err != nil {
		return err
	}
	pw, err := mgmt.SetupAdmin(a, keys)
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("administrator: %w", err)
	}
	fmt.Fprintf(out, "created array %s (id %s) in %s: %d SSDs of %s, NVRAM %s\n",
		cfg.Name, cfg.ID, dir, cfg.SSDs, array.FormatSize(o.SSDSize), array.FormatSize(o.NVRAMSize))
	if pw != "" {
		fmt.Fprintf(out, "pureuser password (shown once): %s\n", pw)
	} else {
		fmt.Fprintf(out, "pureuser logs in with the key in %s\n", f.adminKey)
	}
	return nil
}

func (f *initFlags) options() (array.InitOptions, error) {
	o := array.InitOptions{Name: f.name, SSDs: f.ssds}
	if f.ssds < 6 || f.ssds > 24 {
		return o, fmt.Errorf("--ssds %d: allowed 6 to 24", f.ssds)
	}
	var err error
	if o.SSDSize, err = parseBytes("--ssd-size", f.ssdSize); err != nil {
		return o, err
	}
	if o.NVRAMSize, err = parseBytes("--nvram-size", f.nvramSize); err != nil {
		return o, err
	}
	au, err := parseBytes("--au-size", f.auSize)
	if err != nil {
		return o, err
	}
	o.AUSize = int(au)
	return o, nil
}

// parseBytes reads a size where a bare number means bytes.
func parseBytes(flag, s string) (int64, error) {
	if s != "" && s[len(s)-1] >= '0' && s[len(s)-1] <= '9' {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%s %q: not a positive number of bytes (suffixes K, M, G, T, P)", flag, s)
		}
		return n, nil
	}
	n, err := array.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", flag, err)
	}
	return n, nil
}

func newInit() *cobra.Command {
	var dir string
	var f initFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "create a new array in a data directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.create(dir, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./vfa-data", "data directory")
	f.add(cmd)
	return cmd
}

func newRun() *cobra.Command {
	var dir, logLevel string
	var keyRotation time.Duration
	var unlockRetry, kmipCheck, kmipTimeout time.Duration
	var listen, portals []string
	var sshAddr, pprofAddr string
	var phSpool string
	var demo bool
	var f initFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "run the array (creating it with defaults when the directory has none)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %v", logLevel, err)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			phSpoolBytes, err := parseBytes("--phonehome-spool", phSpool)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !array.Exists(nil, dir) {
				if err := f.create(dir, out); err != nil {
					return err
				}
			}
			if kmipCheck <= 0 {
				kmipCheck = -1 // never
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				// Keep the Go heap compact; the metadata store's caches are
				// outside it. GOMEMLIMIT overrides.
				debug.SetMemoryLimit(datapath.DefaultGoMemoryLimit)
			}
			if pprofAddr != "" {
				go func() {
					logger.Info("profiling", "addr", pprofAddr, "err", http.ListenAndServe(pprofAddr, nil))
				}()
			}
			t0 := time.Now()
			a, err := array.Open(array.Options{Dir: dir, Logger: logger, KeyRotation: keyRotation,
				UnlockRetry: unlockRetry, KMIPCheckInterval: kmipCheck, KMIPTimeout: kmipTimeout})
			if err != nil {
				return err
			}
			cfg := a.Config()
			fmt.Fprintf(out, "array %s (id %s) booted in %v\n", cfg.Name, cfg.ID, time.Since(t0).Round(time.Millisecond))
			if locked, why := a.Locked(); locked {
				fmt.Fprintf(out, "array is LOCKED: %s\n", why)
			} else {
				fmt.Fprintf(out, "array is unlocked\n")
			}
			for _, al := range a.Alerts(false) {
				fmt.Fprintf(out, "alert: %s %s: %s\n", al.Severity, al.Component, al.Message)
			}
			if demo {
				if err := setupDemo(a, out); err != nil {
					a.Close()
					return err
				}
			}
			tgt, err := iscsi.New(iscsi.Config{Frontend: a, Listen: listen, Portals: portals, Logger: logger, Alias: cfg.Name})
			if err != nil {
				a.Close()
				return err
			}
			advertised := portals
			if len(advertised) == 0 {
				for _, ad := range tgt.Addrs() {
					advertised = append(advertised, ad.String())
				}
			}
			if ok, err := mgmt.HasAdmin(a); err == nil && !ok {
				pw, err := mgmt.SetupAdmin(a, "")
				if err != nil {
					tgt.Close()
					a.Close()
					return err
				}
				fmt.Fprintf(out, "pureuser password (shown once): %s\n", pw)
			}
			ssh, err := mgmt.New(a, mgmt.Config{Addr: sshAddr, Portals: advertised, Logger: logger})
			if err != nil {
				tgt.Close()
				a.Close()
				return err
			}
			// Phone home never stops the array: if it cannot start, the
			// array serves without it (the error is logged).
			ph, err := phonehome.Start(a, phonehome.Config{Version: mgmt.Version, Portals: advertised,
				Management: ssh.Addr().String(), Booted: t0, SpoolBytesLimit: phSpoolBytes, Logger: logger})
			if err != nil {
				logger.Error("phone home is not running", "err", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			serveErr := make(chan error, 2)
			go func() { serveErr <- tgt.Serve(ctx) }()
			go func() { serveErr <- ssh.Serve(ctx) }()
			fmt.Fprintf(out, "management: ssh -p %d pureuser@%s\n", ssh.Addr().(*net.TCPAddr).Port, ssh.Addr().(*net.TCPAddr).IP)
			fmt.Fprintf(out, "iSCSI target %s\n", a.TargetName())
			for _, ad := range tgt.Addrs() {
				fmt.Fprintf(out, "  listening on %s\n", ad)
			}
			for _, p := range portals {
				fmt.Fprintf(out, "  portal %s\n", p)
			}
			fmt.Fprintf(out, "%d volumes, %d hosts\n", len(a.Volumes()), len(a.Hosts()))
			select {
			case <-ctx.Done():
			case err := <-serveErr:
				if err != nil {
					logger.Error("a server stopped", "err", err)
				}
			}
			fmt.Fprintln(out, "shutting down")
			ssh.Close()
			tgt.Close()
			if ph != nil {
				if err := ph.Close(); err != nil {
					logger.Warn("phone home", "err", err)
				}
			}
			if err := a.Close(); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./vfa-data", "data directory")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().DurationVar(&keyRotation, "key-rotation", 24*time.Hour, "array key rotation interval")
	cmd.Flags().DurationVar(&unlockRetry, "unlock-retry", 30*time.Second, "how often a locked array retries unlocking (fetching its security token)")
	cmd.Flags().DurationVar(&kmipCheck, "kmip-check-interval", array.DefaultKMIPCheckInterval, "how often a running array checks its security token (KMIP server, certificate, key); 0 or less: never")
	cmd.Flags().DurationVar(&kmipTimeout, "kmip-timeout", 5*time.Second, "timeout of one KMIP connection attempt")
	cmd.Flags().StringArrayVar(&listen, "iscsi", []string{"127.0.0.1:3260"}, "iSCSI listen address (repeatable)")
	cmd.Flags().StringArrayVar(&portals, "portal-address", nil, "portal address HOST:PORT advertised in SendTargets (repeatable; default: the listen addresses)")
	cmd.Flags().StringVar(&sshAddr, "ssh", mgmt.DefaultAddr, "management SSH address")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go profiling endpoints (net/http/pprof) on this loopback address")
	cmd.Flags().StringVar(&phSpool, "phonehome-spool", "64M", "size limit of the phone-home spool (<dir>/spool)")
	cmd.Flags().BoolVar(&demo, "demo", false, "create a volume 'demo' connected at LUN 1 to every initiator that is in no host")
	f.add(cmd)
	return cmd
}

// setupDemo makes the demo configuration (once): a 10 GiB volume and a host
// that matches any initiator in no other host.
func setupDemo(a *array.Array, out io.Writer) error {
	if _, err := a.LookupVolume("demo"); err != nil {
		if _, err := a.CreateVolume("demo", 10<<30); err != nil {
			return fmt.Errorf("demo volume: %w", err)
		}
	}
	found := false
	for _, h := range a.Hosts() {
		if strings.EqualFold(h.Name, "demo") {
			found = true
		}
	}
	if !found {
		if err := a.CreateHost("demo", []string{array.AnyInitiator}); err != nil {
			return fmt.Errorf("demo host: %w", err)
		}
	}
	connected := false
	for _, c := range a.Connections() {
		if strings.EqualFold(c.Volume, "demo") && strings.EqualFold(c.Host, "demo") {
			connected = true
		}
	}
	if !connected {
		if _, err := a.Connect("demo", "demo", false, 1); err != nil {
			return fmt.Errorf("demo connection: %w", err)
		}
	}
	fmt.Fprintln(out, "demo: volume demo (10G) at LUN 1 for any initiator in no host")
	return nil
}
