package array

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/datapath"
)

// FormatVersion of array.json and the data directory layout.
const FormatVersion = 1

// Config is array.json: identity, no secrets.
type Config struct {
	FormatVersion int       `json:"format_version"`
	ID            string    `json:"id"` // 32 hex digits
	Name          string    `json:"name"`
	SSDs          int       `json:"ssds"`
	Created       time.Time `json:"created"`
}

// InitOptions size a new array.
type InitOptions struct {
	Name      string
	SSDs      int
	SSDSize   int64
	NVRAMSize int64
	AUSize    int
}

// Options configure a running array.
type Options struct {
	Dir         string
	FS          vfs.FS // tests use an in-memory FS; default: the real one
	Logger      *slog.Logger
	KeyRotation time.Duration
	FlushDelay  time.Duration
	Now         func() time.Time
	// UnlockRetry is how often a locked array retries unlocking (default 30s).
	UnlockRetry time.Duration
	// KMIPCheckInterval is how often a running array checks its security
	// token (default DefaultKMIPCheckInterval; < 0: never). See token.go.
	KMIPCheckInterval time.Duration
	// KMIPTimeout bounds each KMIP connection attempt (default 5s).
	KMIPTimeout time.Duration
}

// Errors of the array's own operations.
var (
	ErrNoArray = errors.New("no array in this directory")
	ErrInUse   = errors.New("data directory is in use by another vfa process")
)

func configPath(dir string) string { return filepath.Join(dir, "array.json") }

// Exists reports whether dir holds an array.
func Exists(fs vfs.FS, dir string) bool {
	if fs == nil {
		fs = vfs.Default
	}
	_, err := fs.Stat(configPath(dir))
	return err == nil
}

// ValidName checks an object name: 1-63 letters, digits and '-', at least
// one letter, not starting with '-'.
func ValidName(name string) error {
	if len(name) < 1 || len(name) > 63 {
		return fmt.Errorf("name %q must be 1 to 63 characters", name)
	}
	letter := false
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return fmt.Errorf("name %q may contain only letters, digits and '-' (not first)", name)
		}
	}
	if !letter {
		return fmt.Errorf("name %q must contain a letter", name)
	}
	return nil
}

// Init creates a new array in dir.
func Init(fs vfs.FS, dir string, o InitOptions) (*Config, error) {
	if fs == nil {
		fs = vfs.Default
	}
	if Exists(fs, dir) {
		return nil, fmt.Errorf("%s already holds an array", dir)
	}
	if o.SSDs == 0 {
		o.SSDs = datapath.DefaultSSDs
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "vfa-" + hex.EncodeToString(id[:3])
	}
	if err := ValidName(o.Name); err != nil {
		return nil, err
	}
	geo := datapath.CreateOptions{SSDSize: o.SSDSize, NVRAMSize: o.NVRAMSize, AUSize: o.AUSize}
	if err := datapath.ValidateCreate(o.SSDs, &geo); err != nil {
		return nil, err
	}
	_, statErr := fs.Stat(dir)
	existed := statErr == nil
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(fs, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ok := false
	defer func() {
		if ok {
			return
		}
		// Leave nothing behind: a failed init creates no array.
		if !existed {
			fs.RemoveAll(dir)
			return
		}
		for _, p := range []string{"ssd", "nvram", "meta", ".lock", "array.json.tmp"} {
			fs.RemoveAll(filepath.Join(dir, p))
		}
	}()
	err = datapath.Create(datapath.Options{Dir: dir, FS: fs, ArrayID: id, SSDs: o.SSDs}, geo)
	if err != nil {
		return nil, err
	}
	cfg := &Config{FormatVersion: FormatVersion, ID: hex.EncodeToString(id[:]), Name: o.Name, SSDs: o.SSDs, Created: time.Now().UTC()}
	if err := writeConfig(fs, dir, cfg); err != nil {
		return nil, err
	}
	ok = true
	return cfg, nil
}

func writeConfig(fs vfs.FS, dir string, cfg *Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	tmp := configPath(dir) + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := fs.Rename(tmp, configPath(dir)); err != nil {
		return err
	}
	d, err := fs.OpenDir(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	return err
}

func readConfig(fs vfs.FS, dir string) (*Config, error) {
	f, err := fs.Open(configPath(dir))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: %s", ErrNoArray, dir)
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", configPath(dir), err)
	}
	if cfg.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s: format version %d, this build reads %d", configPath(dir), cfg.FormatVersion, FormatVersion)
	}
	if raw, err := hex.DecodeString(cfg.ID); err != nil || len(raw) != 16 {
		return nil, fmt.Errorf("%s: bad array id %q", configPath(dir), cfg.ID)
	}
	return &cfg, nil
}

// lockDir takes an exclusive lock on the data directory so a second process
// fails at once. The in-memory FS (tests) has no process to exclude.
func lockDir(fs vfs.FS, dir string) (func(), error) {
	if fs != vfs.Default {
		return func() {}, nil
	}
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(f)
		f.Close()
		who := strings.TrimSpace(string(pid))
		if who != "" {
			who = " (pid " + who + ")"
		}
		return nil, fmt.Errorf("%w%s: %s", ErrInUse, who, dir)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() { f.Close() }, nil
}

// Array is one running array.
type Array struct {
	o      Options
	cfg    *Config
	id     [16]byte
	store  *datapath.Store
	unlock func()
	log    *slog.Logger

	mu      sync.Mutex
	alerts  alertBook
	changes changeHub
	objects *objects
	token   tokenState // the security token (token.go)

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open boots the array in o.Dir. It returns a running array even when it
// cannot unlock (then Locked says why and it keeps retrying); it fails only
// when the directory holds no usable array or is in use.
func Open(o Options) (*Array, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.UnlockRetry == 0 {
		o.UnlockRetry = 30 * time.Second
	}
	cfg, err := readConfig(o.FS, o.Dir)
	if err != nil {
		return nil, err
	}
	unlock, err := lockDir(o.FS, o.Dir)
	if err != nil {
		return nil, err
	}
	a := &Array{o: o, cfg: cfg, unlock: unlock, log: o.Logger, stop: make(chan struct{})}
	raw, _ := hex.DecodeString(cfg.ID)
	copy(a.id[:], raw)
	a.changes.init()
	a.store, err = datapath.Open(datapath.Options{
		Dir: o.Dir, FS: o.FS, ArrayID: a.id, SSDs: cfg.SSDs, Logger: o.Logger,
		KeyRotation: o.KeyRotation, FlushDelay: o.FlushDelay, Now: o.Now, Events: a.onEvent,
	})
	if err != nil {
		unlock()
		return nil, err
	}
	if a.objects, err = loadObjects(a); err != nil {
		a.store.Close()
		unlock()
		return nil, err
	}
	if err := a.unlockStore(); err != nil {
		a.raise(Alert{Severity: datapath.Critical, Code: "array.locked", Component: "array", Message: err.Error()})
		o.Logger.Warn("array is locked", "reason", err)
		a.wg.Add(1)
		go a.retryUnlock()
	}
	a.startTokenChecks()
	return a, nil
}

func (a *Array) retryUnlock() {
	defer a.wg.Done()
	t := time.NewTicker(a.o.UnlockRetry)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		if err := a.TryUnlock(); err == nil {
			return
		}
	}
}

// TryUnlock attempts to unlock a locked array now.
func (a *Array) TryUnlock() error {
	if locked, _ := a.store.Locked(); !locked {
		return nil
	}
	if err := a.unlockStore(); err != nil {
		a.raise(Alert{Severity: datapath.Critical, Code: "array.locked", Component: "array", Message: err.Error()})
		return err
	}
	a.clear("array.locked", "array")
	a.log.Info("array unlocked")
	a.changes.notify()
	return nil
}

// Close shuts the array down cleanly: pending writes are flushed.
func (a *Array) Close() error {
	select {
	case <-a.stop:
		return nil
	default:
	}
	close(a.stop)
	a.wg.Wait()
	err := a.store.Close()
	a.unlock()
	return err
}

// Config returns the array's identity.
func (a *Array) Config() Config { return *a.cfg }

// Name is the array's name.
func (a *Array) Name() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.Name
}

// Rename changes the array's name.
func (a *Array) Rename(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg := *a.cfg
	cfg.Name = name
	if err := writeConfig(a.o.FS, a.o.Dir, &cfg); err != nil {
		return err
	}
	a.cfg = &cfg
	return nil
}

// TargetName is the array's iSCSI qualified name.
func (a *Array) TargetName() string {
	return "iqn.2010-06.com.purestorage:flasharray." + a.cfg.ID[:16]
}

// Locked reports whether the array is locked and why.
func (a *Array) Locked() (bool, string) { return a.store.Locked() }

// Ready is nil when the array serves data.
func (a *Array) Ready() error {
	if locked, why := a.store.Locked(); locked {
		return fmt.Errorf("%w: %s", ErrLocked, why)
	}
	return nil
}

// Store exposes the data path to the array's own helpers and tests.
func (a *Array) Store() *datapath.Store { return a.store }

// Space is the array's space report.
func (a *Array) Space() (datapath.Space, []datapath.VolumeSpace, error) {
	sp, vols, err := a.store.Space()
	return sp, vols, mapErr(err)
}
