package array

// The security token's two stored forms.
//
// The token record, object "token" in the metadata store, format version
// TokenRecordVersion (1), JSON:
//
//	{"version": 1,
//	 "type": "kmip" | "file",
//	 "server": "kms1",              kmip: the KMIP server object's name
//	 "key_name": "vfa-rdl-<id>",    kmip: the key's Name on the server
//	 "uid": "3",                    kmip: the key's Unique Identifier
//	 "file": "/path/token",         file: the token file's absolute path
//	 "signature": "<64 hex>",       keys.TokenSignature of the key
//	 "enabled": "2025-03-14T09:26:53Z"}
//
// It holds no secret: the signature identifies the key without revealing
// it. Its presence means the security token is enabled (enabling is
// permanent; only a crypto-erase removes it).
//
// The token file (the stand-in for the USB smart card), format version
// TokenFileVersion (1), text:
//
//	line 1: "vfa security token 1"
//	line 2: the 256-bit key as 64 lower-case hex digits
//
// each line ending in "\n" (the last newline is optional); nothing else.
// Whoever holds the file holds the key.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"vfa/keys"
)

// Format versions and limits.
const (
	TokenRecordVersion = 1
	TokenFileVersion   = 1
	tokenRecordMax     = 4 << 10
	tokenFileMax       = 256
	tokenPathMax       = 1024
	tokenFileHeader    = "vfa security token 1"
)

// Token types.
const (
	TokenKMIP = "kmip"
	TokenFile = "file"
)

// Token format errors.
var (
	ErrBadTokenRecord = errors.New("malformed security token record")
	ErrBadTokenFile   = errors.New("not a vfa security token file")
)

// TokenRecord is what the array keeps about an enabled security token.
type TokenRecord struct {
	Type      string    `json:"type"`
	Server    string    `json:"server,omitempty"`
	KeyName   string    `json:"key_name,omitempty"`
	UID       string    `json:"uid,omitempty"`
	File      string    `json:"file,omitempty"`
	Signature string    `json:"signature"`
	Enabled   time.Time `json:"enabled"`
}

type tokenRecordJSON struct {
	Version int `json:"version"`
	TokenRecord
}

func checkTokenRecord(r *TokenRecord) error {
	if len(r.Signature) != 64 {
		return fmt.Errorf("signature of %d characters, want 64 hex digits", len(r.Signature))
	}
	if _, err := hex.DecodeString(r.Signature); err != nil || strings.ToLower(r.Signature) != r.Signature {
		return fmt.Errorf("signature %q is not 64 lower-case hex digits", r.Signature)
	}
	switch r.Type {
	case TokenKMIP:
		if ValidName(r.Server) != nil {
			return fmt.Errorf("KMIP server name %q", r.Server)
		}
		if r.UID == "" || len(r.UID) > keys.MaxKMIPKeyName || r.KeyName == "" || len(r.KeyName) > keys.MaxKMIPKeyName {
			return fmt.Errorf("key identifier %q or name %q", r.UID, r.KeyName)
		}
		if r.File != "" {
			return errors.New("a KMIP token with a file")
		}
	case TokenFile:
		if err := checkTokenPath(r.File); err != nil {
			return err
		}
		if r.Server != "" || r.UID != "" || r.KeyName != "" {
			return errors.New("a file token with KMIP fields")
		}
	default:
		return fmt.Errorf("token type %q", r.Type)
	}
	return nil
}

func checkTokenPath(p string) error {
	if p == "" || len(p) > tokenPathMax || !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0) {
		return fmt.Errorf("token file path %q must be a clean absolute path of at most %d bytes", p, tokenPathMax)
	}
	return nil
}

// EncodeTokenRecord encodes a token record after checking it.
func EncodeTokenRecord(r TokenRecord) ([]byte, error) {
	if err := checkTokenRecord(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	r.Enabled = r.Enabled.UTC()
	return json.Marshal(tokenRecordJSON{Version: TokenRecordVersion, TokenRecord: r})
}

// DecodeTokenRecord decodes and checks a token record.
func DecodeTokenRecord(b []byte) (TokenRecord, error) {
	if len(b) > tokenRecordMax {
		return TokenRecord{}, fmt.Errorf("%w: %d bytes", ErrBadTokenRecord, len(b))
	}
	var r tokenRecordJSON
	if err := json.Unmarshal(b, &r); err != nil {
		return TokenRecord{}, fmt.Errorf("%w: %v", ErrBadTokenRecord, err)
	}
	if r.Version != TokenRecordVersion {
		return TokenRecord{}, fmt.Errorf("%w: version %d (this build reads %d)", ErrBadTokenRecord, r.Version, TokenRecordVersion)
	}
	if err := checkTokenRecord(&r.TokenRecord); err != nil {
		return TokenRecord{}, fmt.Errorf("%w: %v", ErrBadTokenRecord, err)
	}
	return r.TokenRecord, nil
}

// EncodeTokenFile is the content of a token file holding key.
func EncodeTokenFile(key []byte) ([]byte, error) {
	if len(key) != keys.KeySize {
		return nil, fmt.Errorf("%w: a %d-byte key", ErrInvalid, len(key))
	}
	return []byte(tokenFileHeader + "\n" + hex.EncodeToString(key) + "\n"), nil
}

// DecodeTokenFile returns the key a token file holds.
func DecodeTokenFile(b []byte) ([]byte, error) {
	if len(b) > tokenFileMax {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadTokenFile, len(b))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	head, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok || string(head) != tokenFileHeader {
		return nil, fmt.Errorf("%w: the first line is not %q", ErrBadTokenFile, tokenFileHeader)
	}
	if len(body) != 2*keys.KeySize || strings.ToLower(string(body)) != string(body) {
		return nil, fmt.Errorf("%w: the key is not %d lower-case hex digits", ErrBadTokenFile, 2*keys.KeySize)
	}
	key, err := hex.DecodeString(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadTokenFile, err)
	}
	return key, nil
}
