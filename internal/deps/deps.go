//go:build tools

// Package deps pins the modules the packages are being written against, so
// that go mod tidy keeps them while those packages are under construction.
package deps

import (
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/cockroachdb/pebble/v2/vfs"
	_ "github.com/hashicorp/vault/shamir"
	_ "github.com/klauspost/reedsolomon"
	_ "github.com/pierrec/lz4/v4"
	_ "github.com/spf13/cobra"
	_ "github.com/zeebo/blake3"
	_ "golang.org/x/sys/unix"
)
