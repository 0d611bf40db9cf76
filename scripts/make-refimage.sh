#!/bin/bash
# make-refimage.sh: build the project's reference data set, an ext4 image that
# looks like what a storage array really holds, from pinned Debian 12 packages.
#
# What is in it, and why:
#   a/               the union of ~15 packages (dpkg-deb -x): a VM's /usr. Big
#                    shared libraries, compilers, headers, source trees, ICU
#                    tables, already-compressed man pages and fonts: a mix of
#                    compressible and incompressible 4 KiB blocks.
#   b/               a byte-identical copy of a/: a cloned VM. Dedup at 4 KiB
#                    finds all of it (ext4 allocates file data 4 KiB aligned).
#   backup-a.tar     a GNU tar of a/: a backup archive. Its 512-byte headers
#                    shift file contents off 4 KiB alignment, so fixed-block
#                    dedup misses most of it (content-defined chunking would not).
#   free space       ~12 % of the image is never-written blocks: zeros, which
#                    pattern removal must store as nothing.
#
# Deterministic: package versions are pinned (a pin that has left the mirror
# falls back to the current version, with a warning, and the manifest says
# so); mke2fs (1.47, Debian 12) gets its own config, a size computed from the
# tree, a fixed UUID, hash seed and clock; the mtimes of the
# directories and of the tar are fixed; the tar is sorted, with fixed owner
# and member mtimes; and the inode change and access times, which the kernel
# sets while the tree is built, are rewritten in the image with debugfs. Two
# builds from the same .debs give the same image, byte for byte (its sha256
# is in the manifest).
#
# Cached: a second run with the same recipe only prints the path.
set -euo pipefail
VFA_PROG=make-refimage
. "$(dirname "$0")/lib.sh"

OUT=$VFA_CACHE/refimage
EPOCH=1700000000 # 2023-11-14T22:13:20Z: every timestamp we control
FS_UUID=6f1c2d3e-4b5a-4c6d-8e7f-000000000001
FS_HASH_SEED=6f1c2d3e-4b5a-4c6d-8e7f-000000000002
FREE_PCT=12 # free space in the image, percent of the staged tree

# name=version, with the approximate unpacked size and what the package adds.
PINS=(
	libllvm14=1:14.0.6-12                 # 104 MB one huge shared library
	gcc-12=12.2.0-14+deb12u1              #  66 MB compiler binaries (lto1, ...)
	cpp-12=12.2.0-14+deb12u1              #  33 MB cc1
	libstdc++-12-dev=12.2.0-14+deb12u1    #  18 MB C++ headers, static libraries
	linux-libc-dev=6.1.192-3              #   7 MB kernel headers (many small files)
	libc6-dev=2.36-9+deb12u14             #  11 MB headers, static libraries
	libpython3.11-stdlib=3.11.2-6+deb12u9 #   8 MB Python source and .so
	python3.11-minimal=3.11.2-6+deb12u9   #   6 MB
	perl-modules-5.36=5.36.0-7+deb12u4    #  17 MB Perl source
	golang-1.19-src=1.19.8-2              # 115 MB Go source and testdata (some pre-compressed)
	libicu72=72.1-3+deb12u1               #  35 MB ICU data tables
	postgresql-15=15.20-0+deb12u1         #  52 MB binaries, .mo catalogues, .sql
	manpages-dev=6.03-2                   #   3 MB gzip'd man pages (incompressible)
	git-man=1:2.39.5-0+deb12u3            #   2 MB gzip'd man pages
	fonts-dejavu-core=2.37-6              #   3 MB TrueType fonts
)

usage() {
	cat <<EOF
usage: scripts/make-refimage.sh [--force] [--print]

Builds \$VFA_CACHE/refimage/image.ext4 (VFA_CACHE=$VFA_CACHE) and prints its
path. About 600 MB of downloads on the first run (kept in refimage/debs),
~2 GiB of scratch space, a few minutes. Needs root (file ownership).
  --force   rebuild even if the cached image matches the recipe
  --print   only print the path of a valid cached image (exit 1 if none)
Manifest (versions, .deb and image sha256s): \$VFA_CACHE/refimage/MANIFEST
EOF
}

force=0 print_only=0
while (($#)); do
	case $1 in
	--force) force=1 ;;
	--print) print_only=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

# The recipe key: pins + mkfs parameters + this script's build steps. A cached
# image whose key matches is reused.
recipe_key() {
	{ printf '%s\n' "${PINS[@]}" "$EPOCH $FS_UUID $FS_HASH_SEED $FREE_PCT"; sed -n '/^build() {/,/^}/p' "$0"; } |
		sha256sum | cut -c1-16
}
KEY=$(recipe_key)
IMAGE=$OUT/image.ext4

if ((!force)) && [ -s "$IMAGE" ] && [ "$(cat "$OUT/KEY" 2>/dev/null)" = "$KEY" ]; then
	printf '%s\n' "$IMAGE"
	exit 0
fi
((print_only)) && { echo "make-refimage: no cached image for recipe $KEY; run scripts/make-refimage.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || vfa_die "must run as root (dpkg-deb -x keeps file owners)"
vfa_need apt-get dpkg-deb mkfs.ext4 e2fsck debugfs dumpe2fs tar sha256sum

STAGE=""
cleanup() { [ -n "$STAGE" ] && rm -rf "$STAGE"; rm -f "$IMAGE.tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# download_debs: one .deb per pin in $OUT/debs; writes "name version note" lines to $OUT/debs/VERSIONS.
download_debs() {
	local d=$OUT/debs p name ver got
	mkdir -p "$d"
	: >"$d/VERSIONS.tmp"
	for p in "${PINS[@]}"; do
		name=${p%%=*} ver=${p#*=}
		got=$(compgen -G "$d/${name}_*.deb" | head -1 || true)
		if [ -z "$got" ]; then
			vfa_log "download $p"
			if ! (cd "$d" && apt-get download -q "$p" >/dev/null 2>&1); then
				vfa_log "WARNING: $p is not on the mirror; using the current candidate (the data set changes)"
				(cd "$d" && apt-get download -q "$name" >/dev/null 2>&1) ||
					vfa_die "apt-get download $name failed (apt-get update? network?)"
			fi
			got=$(compgen -G "$d/${name}_*.deb" | head -1) || vfa_die "no .deb for $name after download"
		fi
		local have
		have=$(dpkg-deb -f "$got" Version)
		printf '%s %s %s\n' "$name" "$have" "$([ "$have" = "$ver" ] && echo pinned || echo "NOT-PINNED(want $ver)")" >>"$d/VERSIONS.tmp"
	done
	mv "$d/VERSIONS.tmp" "$d/VERSIONS"
}

# used_inodes IMAGE: every allocated inode number, from dumpe2fs's per-group free lists.
used_inodes() {
	dumpe2fs "$1" 2>/dev/null | awk '
		/^Inodes per group:/ { ipg = $4 }
		/^Group [0-9]+:/     { g = $2 + 0 }
		/^  Free inodes:/ {
			lo = g * ipg + 1; hi = (g + 1) * ipg
			delete free
			sub(/^  Free inodes: */, "")
			n = split($0, r, /, */)
			for (i = 1; i <= n; i++) {
				if (r[i] == "") continue
				m = split(r[i], ab, "-"); a = ab[1] + 0; b = (m > 1 ? ab[2] : ab[1]) + 0
				for (x = a; x <= b; x++) free[x] = 1
			}
			for (x = lo; x <= hi; x++) if (!(x in free)) print x
		}'
}

build() {
	local t0=$SECONDS
	download_debs
	STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
	local s=$STAGE/root deb
	mkdir -p "$s/a"
	for deb in "$OUT"/debs/*.deb; do dpkg-deb -x "$deb" "$s/a"; done
	find "$s/a" -type d -exec touch -h -d "@$EPOCH" {} +
	cp -a "$s/a" "$s/b"
	tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
		-C "$s" -cf "$s/backup-a.tar" a
	# Directory mtimes depend on extraction order; fix them (file mtimes come
	# from the packages and are kept; atimes and ctimes are fixed in the image).
	find "$s" -type d -exec touch -h -m -d "@$EPOCH" {} +
	touch -h -m -d "@$EPOCH" "$s/backup-a.tar"
	vfa_log "staged $(du -sh --apparent-size "$s" | cut -f1) in $((SECONDS - t0))s"

	# The image size comes from the tree alone (4 KiB per started block of
	# each file, one per directory), not from how the host file system
	# allocated it.
	local used_mib size_mib
	used_mib=$(find "$s" \( -type f -printf 'f %s\n' \) -o \( -type d -printf 'd\n' \) |
		awk '{ b += ($1 == "d") ? 1 : int(($2 + 4095) / 4096) } END { printf "%d", b * 4096 / 1048576 + 1 }')
	size_mib=$((used_mib * (100 + FREE_PCT) / 100 + 64))
	# Our own mke2fs.conf (Debian 12's ext4 defaults), so the host's cannot
	# change the layout.
	cat >"$STAGE/mke2fs.conf" <<'CONF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
CONF
	rm -f "$IMAGE.tmp"
	# mke2fs -d walks directories in sorted order (1.47), so inode and block
	# allocation depend only on the tree.
	MKE2FS_CONFIG=$STAGE/mke2fs.conf E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -t ext4 -b 4096 -L refimage -U "$FS_UUID" \
		-E "hash_seed=$FS_HASH_SEED,lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,nodiscard" \
		-d "$s" "$IMAGE.tmp" "${size_mib}M" >/dev/null
	# Inode change times are the extraction time and access times are when cp,
	# tar and mke2fs read the tree (relatime): set both to EPOCH in the image.
	used_inodes "$IMAGE.tmp" |
		awk -v e="$EPOCH" '{ printf "sif <%d> ctime @%d\nsif <%d> atime @%d\n", $1, e, $1, e }' >"$STAGE/ctime.cmds"
	E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$STAGE/ctime.cmds" "$IMAGE.tmp" >/dev/null 2>"$STAGE/debugfs.err" ||
		{ tail -5 "$STAGE/debugfs.err" >&2; vfa_die "debugfs ctime rewrite failed"; }
	if grep -v '^debugfs [0-9.]* (' "$STAGE/debugfs.err" | grep -q .; then
		head -5 "$STAGE/debugfs.err" >&2
		vfa_die "debugfs reported errors while rewriting ctimes"
	fi
	e2fsck -fn "$IMAGE.tmp" >"$STAGE/fsck.out" 2>&1 || { tail -20 "$STAGE/fsck.out" >&2; vfa_die "e2fsck -fn of the new image failed"; }
	vfa_log "mkfs + time fixup ($(($(wc -l <"$STAGE/ctime.cmds") / 2)) inodes) + fsck done at $((SECONDS - t0))s"
	mv "$IMAGE.tmp" "$IMAGE"
	rm -rf "$STAGE"
	STAGE=""
}

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock -w 1800 9 || vfa_die "another make-refimage.sh holds $OUT/.lock"
# Another run may have finished while we waited.
if ((!force)) && [ -s "$IMAGE" ] && [ "$(cat "$OUT/KEY" 2>/dev/null)" = "$KEY" ]; then
	printf '%s\n' "$IMAGE"
	exit 0
fi
rm -f "$OUT/KEY"
vfa_log "building the reference image (recipe $KEY) in $OUT"
build
{
	echo "recipe $KEY"
	echo "image $(stat -c %s "$IMAGE") bytes, $(du -B1 "$IMAGE" | cut -f1) allocated"
	echo "sha256 $(sha256sum "$IMAGE" | cut -d' ' -f1)"
	echo "packages:"
	sed 's/^/  /' "$OUT/debs/VERSIONS"
	echo "debs:"
	(cd "$OUT/debs" && sha256sum -- *.deb | sed 's/^/  /')
} >"$OUT/MANIFEST"
printf '%s\n' "$KEY" >"$OUT/KEY"
grep -q NOT-PINNED "$OUT/MANIFEST" && vfa_log "WARNING: some packages are not the pinned versions (see $OUT/MANIFEST)"
vfa_log "$(sed -n 2,3p "$OUT/MANIFEST" | tr '\n' ' ')"
printf '%s\n' "$IMAGE"
