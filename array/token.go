package array

// The security token (Rapid Data Locking). With it enabled, every stored
// array key share is sealed (keys.GCMSealer) with a key the array does not
// keep: an AES-256 key on a KMIP server, or the key in a token file (the
// stand-in for a USB smart card). The array records only the key's
// identity and signature (tokenfmt.go).
//
// Boot: before the store unlocks, the array fetches the key — for KMIP, a
// TLS connection with the array's certificate, the key's State (it must be
// Active: PyKMIP's Get returns revoked keys too), then Get — checks its
// signature, hands the store the sealer, and unlocks. Anything else leaves
// the array locked with the exact reason (Locked, alert "array.locked");
// the unlock retry loop (and TryUnlock, `purearray unlock`) fetches again,
// so the array unlocks by itself once the key is reachable again.
//
// Running: a periodic check (Options.KMIPCheckInterval) raises the alert
// "security-token.degraded" while the KMIP server is unreachable, the
// certificate has expired, the key is no longer Active or no longer the
// enrolled key, or the token file is gone; data stays available until the
// next restart.
//
// Disabling: crypto-erase (datapath.Store.CryptoErase) and the objects
// that described the erased data (hosts, host groups, connections) and the
// token record are deleted. Kept: administrators, settings, the audit log,
// certificates and KMIP server objects. The array keeps its id and name.
//
// Invariants:
//   - the token record is written before any share is sealed, so an array
//     with sealed shares always knows which token opens them;
//   - a key is used only if it is Active and its signature matches the
//     record; its bytes are cleared once the sealer is built;
//   - token operations (enable, disable, fetch, check) run one at a time.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/datapath"
	"vfa/keys"
)

const (
	tokenObjectKey = "token"
	// DefaultKMIPCheckInterval is how often a running array checks its
	// security token.
	DefaultKMIPCheckInterval = 5 * time.Minute
	alertTokenDegraded       = "security-token.degraded"
	alertTokenComponent      = "security-token"
)

// Security token errors.
var (
	// ErrTokenMismatch: the key offered is not the enrolled key (its
	// signature differs).
	ErrTokenMismatch = errors.New("key mismatch")
	// ErrTokenEnabled: the security token is already enabled.
	ErrTokenEnabled = errors.New("the security token is already enabled (enabling is permanent)")
	// ErrTokenDisabled: the security token is not enabled.
	ErrTokenDisabled = errors.New("the security token is not enabled")
)

// tokenState is the array's runtime view of its security token.
type tokenState struct {
	mu       sync.Mutex // serialises enable, disable, fetch and check
	stateMu  sync.Mutex
	degraded string
}

// TokenStatus is purearray list --security-token.
type TokenStatus struct {
	Enabled   bool
	Status    string // "disabled", "enabled", "locked: <reason>", "degraded: <reason>"
	Type      string // "kmip" or "file"
	Signature string
	Server    string // the KMIP server's name, or the token file's path
	Record    TokenRecord
}

// TokenTest is the result of purearray test security-token.
type TokenTest struct {
	OK     bool
	Reason string // why not, one line
	Err    error
}

func (a *Array) tokenRecord() (*TokenRecord, error) {
	v, ok, err := a.store.ObjectGet(tokenObjectKey)
	if err != nil || !ok {
		return nil, err
	}
	r, err := DecodeTokenRecord(v)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Token reports the security token's state.
func (a *Array) Token() (TokenStatus, error) {
	rec, err := a.tokenRecord()
	if err != nil {
		return TokenStatus{}, err
	}
	if rec == nil {
		return TokenStatus{Status: "disabled"}, nil
	}
	st := TokenStatus{Enabled: true, Status: "enabled", Type: rec.Type, Signature: rec.Signature, Server: rec.Server, Record: *rec}
	if rec.Type == TokenFile {
		st.Server = rec.File
	}
	a.token.stateMu.Lock()
	degraded := a.token.degraded
	a.token.stateMu.Unlock()
	if locked, why := a.store.Locked(); locked {
		st.Status = "locked: " + why
	} else if degraded != "" {
		st.Status = "degraded: " + degraded
	}
	return st, nil
}

// unlockStore fetches the security token's key (if one is enabled), gives
// the store its sealer and unlocks the store. A token that cannot be had
// leaves the store locked with the reason.
func (a *Array) unlockStore() error {
	a.token.mu.Lock()
	rec, err := a.tokenRecord()
	if err != nil {
		a.token.mu.Unlock()
		reason := "security token record unreadable: " + err.Error()
		a.store.SetLockReason(reason)
		return &datapath.LockedError{Reason: reason, Err: err}
	}
	if rec != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.tokenFetchBudget())
		key, err := a.fetchTokenKey(ctx, rec)
		cancel()
		if err != nil {
			a.token.mu.Unlock()
			reason := tokenLockReason(rec, err)
			a.store.SetLockReason(reason)
			return &datapath.LockedError{Reason: reason, Err: err}
		}
		sl, err := keys.NewGCMSealer(key)
		clear(key)
		if err != nil {
			a.token.mu.Unlock()
			return err
		}
		a.store.SetSealer(sl)
	}
	a.token.mu.Unlock()
	return a.store.Unlock()
}

// tokenFetchBudget bounds one fetch: every address of the server, twice
// over (dial, then the operations).
func (a *Array) tokenFetchBudget() time.Duration {
	return 4 * keys.MaxKMIPAddrs * a.kmipDialTimeout()
}

// fetchTokenKey returns the enrolled key, checked.
func (a *Array) fetchTokenKey(ctx context.Context, rec *TokenRecord) ([]byte, error) {
	switch rec.Type {
	case TokenFile:
		return a.readTokenFile(rec)
	case TokenKMIP:
		s, err := a.KMIPServerByName(rec.Server)
		if err != nil {
			return nil, err
		}
		c, err := a.dialKMIP(ctx, s)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return a.fetchKMIPKey(ctx, c, rec)
	}
	return nil, fmt.Errorf("%w: token type %q", ErrBadTokenRecord, rec.Type)
}

func (a *Array) readTokenFile(rec *TokenRecord) ([]byte, error) {
	f, err := a.o.FS.Open(rec.File)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("token file %s is missing", rec.File)
		}
		return nil, fmt.Errorf("token file %s: %w", rec.File, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, tokenFileMax+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", rec.File, err)
	}
	key, err := DecodeTokenFile(b)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", rec.File, err)
	}
	if keys.TokenSignature(key) != rec.Signature {
		clear(key)
		return nil, fmt.Errorf("%w: token file %s holds another key than the enrolled one", ErrTokenMismatch, rec.File)
	}
	return key, nil
}

// fetchKMIPKey reads the enrolled key's state and, if Active, the key, and
// checks its signature. If the key's identifier is gone from the server
// but another key carries its name, that key is the one on offer: a
// replacement, reported as a mismatch unless it is the same key.
func (a *Array) fetchKMIPKey(ctx context.Context, c *keys.KMIPClient, rec *TokenRecord) ([]byte, error) {
	key, err := c.FetchActiveKey(ctx, rec.UID)
	if errors.Is(err, keys.ErrKeyDestroyed) {
		ids, lerr := c.Locate(ctx, rec.KeyName)
		if lerr != nil {
			return nil, err
		}
		for _, id := range ids {
			if id == rec.UID {
				continue
			}
			other, oerr := c.FetchActiveKey(ctx, id)
			if oerr != nil {
				continue
			}
			if keys.TokenSignature(other) == rec.Signature {
				return other, nil // the same key, registered again
			}
			clear(other)
			return nil, fmt.Errorf("%w: key %q on KMIP server %s is now identifier %s, not the enrolled key %s (destroyed or removed)",
				ErrTokenMismatch, rec.KeyName, rec.Server, id, rec.UID)
		}
	}
	if err != nil {
		return nil, err
	}
	if keys.TokenSignature(key) != rec.Signature {
		clear(key)
		return nil, fmt.Errorf("%w: key %s on KMIP server %s has another signature than the enrolled one", ErrTokenMismatch, rec.UID, rec.Server)
	}
	return key, nil
}

// tokenShort is the short name of a token failure, as purearray test
// security-token and the lock reason say it.
func tokenShort(err error) string {
	switch {
	case errors.Is(err, ErrTokenMismatch):
		return "key mismatch"
	case errors.Is(err, keys.ErrKeyRevoked):
		return "key revoked"
	case errors.Is(err, keys.ErrKeyDeactivated):
		return "key deactivated"
	case errors.Is(err, keys.ErrKeyDestroyed):
		return "key destroyed"
	case errors.Is(err, keys.ErrKeyNotActive):
		return "key not active"
	case errors.Is(err, keys.ErrKMIPNotReady):
		return "Server is not ready for KMIP operations"
	case errors.Is(err, keys.ErrKMIPUnreachable), errors.Is(err, keys.ErrKMIPHandshake),
		errors.Is(err, keys.ErrKMIPUntrusted), errors.Is(err, keys.ErrKMIPAuth):
		return "Cannot connect and authenticate with the server"
	}
	return "security token unavailable"
}

func tokenDetail(err error) string {
	var ke *keys.KMIPError
	if errors.As(err, &ke) {
		return kmipReason(err)
	}
	return err.Error()
}

// tokenLockReason is the one line a locked array gives.
func tokenLockReason(rec *TokenRecord, err error) string {
	r := "security token: " + tokenShort(err) + " (" + tokenDetail(err) + ")"
	if errors.Is(err, keys.ErrKeyDestroyed) {
		r += "; the array cannot be unlocked any more: disabling the security token erases all data and makes it usable again"
	}
	return r
}

// EnableTokenKMIP enables the security token with a new AES-256 key on a
// KMIP server: Create (named for this array), Activate, Get; then every
// stored array key share is sealed with it (the array key is rotated).
func (a *Array) EnableTokenKMIP(ctx context.Context, server string) (TokenStatus, error) {
	a.token.mu.Lock()
	defer a.token.mu.Unlock()
	if err := a.canEnable(); err != nil {
		return TokenStatus{}, err
	}
	s, err := a.KMIPServerByName(server)
	if err != nil {
		return TokenStatus{}, err
	}
	c, err := a.dialKMIP(ctx, s)
	if err != nil {
		return TokenStatus{}, fmt.Errorf("KMIP server %s: %s", s.Name, tokenDetail(err))
	}
	defer c.Close()
	name := "vfa-rdl-" + a.cfg.ID
	uid, err := c.CreateAES256(ctx, name)
	if err != nil {
		return TokenStatus{}, fmt.Errorf("KMIP server %s: create the key: %s", s.Name, tokenDetail(err))
	}
	key, err := func() ([]byte, error) {
		if err := c.Activate(ctx, uid); err != nil {
			return nil, fmt.Errorf("activate key %s: %s", uid, tokenDetail(err))
		}
		key, err := c.FetchActiveKey(ctx, uid)
		if err != nil {
			return nil, fmt.Errorf("get key %s: %s", uid, tokenDetail(err))
		}
		return key, nil
	}()
	if err != nil {
		_ = c.Destroy(ctx, uid) // a PreActive key can go; an Active one stays
		return TokenStatus{}, fmt.Errorf("KMIP server %s: %w", s.Name, err)
	}
	defer clear(key)
	return a.enableWith(key, TokenRecord{Type: TokenKMIP, Server: s.Name, KeyName: name, UID: uid})
}

// EnableTokenFile enables the security token with a token file: the key in
// the file at path if there is one, else a new key written there.
func (a *Array) EnableTokenFile(path string) (TokenStatus, error) {
	if err := checkTokenPath(path); err != nil {
		return TokenStatus{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	a.token.mu.Lock()
	defer a.token.mu.Unlock()
	if err := a.canEnable(); err != nil {
		return TokenStatus{}, err
	}
	var key []byte
	if f, err := a.o.FS.Open(path); err == nil {
		b, rerr := io.ReadAll(io.LimitReader(f, tokenFileMax+1))
		f.Close()
		if rerr != nil {
			return TokenStatus{}, fmt.Errorf("token file %s: %w", path, rerr)
		}
		if key, err = DecodeTokenFile(b); err != nil {
			return TokenStatus{}, fmt.Errorf("%w: token file %s exists: %v", ErrInvalid, path, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		key = keys.NewKey()
		if err := a.writeTokenFile(path, key); err != nil {
			clear(key)
			return TokenStatus{}, err
		}
	} else {
		return TokenStatus{}, fmt.Errorf("token file %s: %w", path, err)
	}
	defer clear(key)
	return a.enableWith(key, TokenRecord{Type: TokenFile, File: path})
}

func (a *Array) writeTokenFile(path string, key []byte) error {
	b, err := EncodeTokenFile(key)
	if err != nil {
		return err
	}
	defer clear(b)
	if a.o.FS == vfs.Default {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("token file %s: %w", path, err)
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return fmt.Errorf("token file %s: %w", path, err)
		}
	} else {
		f, err := a.o.FS.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("token file %s: %w", path, err)
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("token file %s: %w", path, err)
		}
	}
	if d, err := a.o.FS.OpenDir(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (a *Array) canEnable() error {
	rec, err := a.tokenRecord()
	if err != nil {
		return err
	}
	if rec != nil {
		return fmt.Errorf("%w: %w", ErrConflict, ErrTokenEnabled)
	}
	if locked, why := a.store.Locked(); locked {
		return fmt.Errorf("%w: %s", ErrLocked, why)
	}
	return nil
}

// enableWith records the token, then seals every share with its key.
func (a *Array) enableWith(key []byte, rec TokenRecord) (TokenStatus, error) {
	sl, err := keys.NewGCMSealer(key)
	if err != nil {
		return TokenStatus{}, err
	}
	rec.Signature = keys.TokenSignature(key)
	rec.Enabled = a.o.Now()
	b, err := EncodeTokenRecord(rec)
	if err != nil {
		return TokenStatus{}, err
	}
	if err := a.store.ObjectUpdate(map[string][]byte{tokenObjectKey: b}, nil); err != nil {
		return TokenStatus{}, err
	}
	a.store.SetSealer(sl)
	if err := a.store.RotateKeys("security token enabled"); err != nil {
		st, _ := a.Token()
		return st, fmt.Errorf("the security token is enabled, but sealing the array key shares failed (they are sealed at the next key rotation): %w", err)
	}
	a.log.Info("security token enabled", "type", rec.Type, "signature", rec.Signature)
	return a.Token()
}

// TestToken checks the security token now: for KMIP a TLS connection, a
// Locate, and the key still Active with the enrolled signature; for a file,
// the file and its key.
func (a *Array) TestToken(ctx context.Context) (TokenTest, error) {
	a.token.mu.Lock()
	defer a.token.mu.Unlock()
	rec, err := a.tokenRecord()
	if err != nil {
		return TokenTest{}, err
	}
	if rec == nil {
		return TokenTest{}, fmt.Errorf("%w: %w", ErrConflict, ErrTokenDisabled)
	}
	return a.testToken(ctx, rec), nil
}

func (a *Array) testToken(ctx context.Context, rec *TokenRecord) TokenTest {
	fail := func(err error) TokenTest {
		return TokenTest{Reason: tokenShort(err) + " (" + tokenDetail(err) + ")", Err: err}
	}
	var key []byte
	switch rec.Type {
	case TokenFile:
		k, err := a.readTokenFile(rec)
		if err != nil {
			return fail(err)
		}
		key = k
	case TokenKMIP:
		s, err := a.KMIPServerByName(rec.Server)
		if err != nil {
			return fail(err)
		}
		c, err := a.dialKMIP(ctx, s)
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		if _, err := c.Locate(ctx, rec.KeyName); err != nil {
			return fail(err)
		}
		k, err := a.fetchKMIPKey(ctx, c, rec)
		if err != nil {
			return fail(err)
		}
		key = k
	}
	clear(key)
	return TokenTest{OK: true}
}

// CheckToken runs the running array's check of its security token now and
// returns the degraded reason ("" when healthy). It raises or clears the
// alert "security-token.degraded". A locked array is not checked (the
// unlock retry loop fetches the key).
func (a *Array) CheckToken(ctx context.Context) string {
	if locked, _ := a.store.Locked(); locked {
		return ""
	}
	a.token.mu.Lock()
	rec, err := a.tokenRecord()
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	} else if rec != nil {
		if rec.Type == TokenKMIP {
			if s, err := a.KMIPServerByName(rec.Server); err == nil {
				if tc, err := a.TLSCertificate(s.Certificate); err == nil && tc.Leaf != nil && a.o.Now().After(tc.Leaf.NotAfter) {
					problems = append(problems, fmt.Sprintf("certificate %s expired on %s", s.Certificate, tc.Leaf.NotAfter.UTC().Format(time.RFC3339)))
				}
			}
		}
		if t := a.testToken(ctx, rec); !t.OK {
			problems = append(problems, t.Reason)
		}
	}
	a.token.mu.Unlock()
	reason := strings.Join(problems, "; ")
	a.token.stateMu.Lock()
	changed := a.token.degraded != reason
	a.token.degraded = reason
	a.token.stateMu.Unlock()
	if reason != "" {
		a.raise(Alert{Severity: datapath.Warning, Code: alertTokenDegraded, Component: alertTokenComponent,
			Message: "security token degraded (data stays available until the next restart): " + reason})
		if changed {
			a.log.Warn("security token degraded", "reason", reason)
		}
	} else {
		a.clear(alertTokenDegraded, alertTokenComponent)
	}
	return reason
}

// startTokenChecks runs CheckToken every Options.KMIPCheckInterval until
// the array closes.
func (a *Array) startTokenChecks() {
	iv := a.o.KMIPCheckInterval
	if iv == 0 {
		iv = DefaultKMIPCheckInterval
	}
	if iv < 0 {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-a.stop
			cancel()
		}()
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-t.C:
			}
			a.CheckToken(ctx)
		}
	}()
}

// DisableToken crypto-erases the array (see the top of this file for what
// goes and what stays) and disables the security token. It works on a
// locked array too: that is the way out of a key that is gone for good.
func (a *Array) DisableToken() error {
	a.token.mu.Lock()
	defer a.token.mu.Unlock()
	rec, err := a.tokenRecord()
	if err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("%w: %w", ErrConflict, ErrTokenDisabled)
	}
	if err := a.store.CryptoErase(); err != nil {
		return err
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	dels := []string{tokenObjectKey}
	for _, pfx := range []string{"host/", "hgroup/", "conn/"} {
		kvs, err := a.store.ObjectList(pfx)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			dels = append(dels, kv.Key)
		}
	}
	if err := a.store.ObjectUpdate(nil, dels); err != nil {
		return fmt.Errorf("crypto-erase done, but deleting the hosts and connections failed: %w", err)
	}
	o.hosts, o.groups, o.conns = map[string]*Host{}, map[string]*HostGroup{}, map[connKey]int{}
	a.token.stateMu.Lock()
	a.token.degraded = ""
	a.token.stateMu.Unlock()
	a.clear("array.locked", "array")
	a.clear(alertTokenDegraded, alertTokenComponent)
	a.log.Warn("security token disabled: the array was crypto-erased")
	a.changes.notify()
	return nil
}
