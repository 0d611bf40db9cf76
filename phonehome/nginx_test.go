package phonehome

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"vfa/array"
)

// A real TLS server not written by us: nginx from Debian, started by the
// test on loopback with its own configuration and prefix (never the system
// service), TLS 1.3 only, client certificates verified against the test's
// client CA, and every request body kept on disk. It proxies the upload to
// a second nginx server block that answers 200, so that nginx reads and
// stores the whole body.

// needTool finds an external program; in CI a missing one is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI requires it; scripts/deps.sh installs it): %v", name, err)
		}
		t.Skipf("%s is not installed (scripts/deps.sh installs it): %v", name, err)
	}
	return p
}

const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{P}}/nginx.pid;
error_log {{P}}/error.log info;
events { worker_connections 64; }
http {
	access_log {{P}}/access.log;
	client_body_temp_path {{P}}/body;
	proxy_temp_path {{P}}/proxy;
	fastcgi_temp_path {{P}}/fastcgi;
	uwsgi_temp_path {{P}}/uwsgi;
	scgi_temp_path {{P}}/scgi;
	server {
		listen {{TLS}} ssl;
		ssl_certificate {{P}}/server.pem;
		ssl_certificate_key {{P}}/server.key;
		ssl_protocols TLSv1.3;
		ssl_client_certificate {{P}}/clientca.pem;
		ssl_verify_client on;
		client_max_body_size 16m;
		client_body_in_file_only on;
		location = /upload {
			proxy_pass http://{{PLAIN}}/stored;
		}
	}
	server {
		listen {{PLAIN}};
		location = /stored { return 200 "stored\n"; }
	}
}
`

// startNginx runs nginx with a server certificate from serverCA accepting
// clients of clientCA; it returns the upload URL and the body directory.
func startNginx(t *testing.T, serverCA, clientCA *testCA) (string, string) {
	bin := needTool(t, "nginx")
	prefix := t.TempDir()
	_, certPEM, keyPEM := serverCA.issue(t, "nginx", true)
	for name, data := range map[string]string{"server.pem": string(certPEM), "server.key": string(keyPEM), "clientca.pem": clientCA.pem} {
		if err := os.WriteFile(filepath.Join(prefix, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsAddr, plainAddr := freeAddr(t), freeAddr(t)
	conf := strings.NewReplacer("{{P}}", prefix, "{{TLS}}", tlsAddr, "{{PLAIN}}", plainAddr).Replace(nginxConf)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		os.Mkdir(filepath.Join(prefix, d), 0o700)
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(prefix, "error.log")); err == nil {
				t.Logf("nginx error.log:\n%s", b)
			}
		}
	})
	// Ready when it accepts connections (or dead).
	deadline := time.Now().Add(waitMax)
	for {
		c, err := net.DialTimeout("tcp", tlsAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Fatalf("nginx exited: %v\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s", tlsAddr)
		}
	}
	return "https://" + tlsAddr + "/upload", filepath.Join(prefix, "body")
}

// bodies decodes every request body nginx kept. While uploads are in
// flight, nginx may still be writing the newest body, so a caller that is
// only polling passes partial=true and undecodable files are passed over;
// once the uploader has stopped, every file must decode.
func bodies(t *testing.T, dir string, partial bool) []*Document {
	t.Helper()
	var out []*Document
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		d, err := DecodeDocument(b, 64<<20)
		if err != nil && partial {
			return nil
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func TestNginx(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	url, bodyDir := startNginx(t, serverCA, clientCA)
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	if _, err := a.Audit(array.AuditEntry{User: "pureuser", Command: "purevol create nginx-vol", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1000)
	configure(t, a, url, serverCA, 100*time.Millisecond, 300*time.Millisecond, "")
	u := startUploader(t, a, Config{onSent: func(e Entry, err error) { sent <- err }})
	ok := 0
	logs := false
	for ok < 8 || !logs {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("upload to nginx: %v", err)
			}
			ok++
		case <-time.After(waitMax):
			t.Fatalf("%d uploads in %v", ok, waitMax)
		}
		for _, d := range bodies(t, bodyDir, true) {
			if d.Logs != nil {
				logs = true
			}
		}
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	docs := bodies(t, bodyDir, false)
	if len(docs) < ok {
		t.Fatalf("%d bodies on disk after %d successful uploads", len(docs), ok)
	}
	found := false
	for i, d := range docs {
		if d.Seq != uint64(i+1) || d.Array.ID != a.Config().ID {
			t.Fatalf("body %d: seq %d array %s", i, d.Seq, d.Array.ID)
		}
		if d.Logs != nil {
			for _, e := range d.Logs.Audit {
				found = found || e.Command == "purevol create nginx-vol"
			}
		}
	}
	if !found {
		t.Fatal("the audit entry is not in any body")
	}
	if n := len(docs); docs[0].Kind != "diagnostics" || n < 8 {
		t.Fatalf("%d documents, first %s", n, docs[0].Kind)
	}
}

// TestNginxRefusesCertificate: nginx answers 400 when the client
// certificate is not from its CA: nothing is stored, the document stays
// spooled, the reason is in the status and an alert.
func TestNginxRefusesCertificate(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	url, bodyDir := startNginx(t, serverCA, clientCA)
	a := openArray(t, memArrayFS(t))
	alerts := alertWatch(a)
	configure(t, a, url, serverCA, time.Hour, time.Hour, "")
	u := startUploader(t, a, Config{})
	al := waitAlert(t, alerts, CodeUpload, false)
	if !strings.Contains(al.Message, "400") {
		t.Fatalf("alert %q", al.Message)
	}
	if st := u.Status(); !strings.Contains(st.LastError, "400 Bad Request") || st.SpooledDocuments == 0 {
		t.Fatalf("status %+v", st)
	}
	if docs := bodies(t, bodyDir, false); len(docs) != 0 {
		t.Fatalf("nginx stored %d bodies", len(docs))
	}
}
