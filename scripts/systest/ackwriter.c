/*
 * ackwriter: a crash-test writer and verifier on libiscsi's asynchronous API.
 *
 * write mode lays down N writes of BS bytes, one after the other from OFFSET,
 * with QD of them in flight, each carrying generation GEN of a deterministic
 * content function, and prints "A <index>\n" on stdout (one write(2) per
 * line, no stdio buffer) the moment a write completes GOOD with its whole
 * transfer. A line in that file is therefore exactly one acknowledged write.
 *
 * verify mode reads the same region back and checks it against the
 * acknowledgements (-a FILE, the lines write mode printed):
 *   - every sector of an acknowledged write holds generation GEN;
 *   - every sector of a write that was not acknowledged holds GEN or the
 *     previous generation PREV (-p); anything else is corruption.
 * It prints one summary line and exits 1 if any sector is wrong.
 *
 * Content: sector s (absolute LBA, 512 bytes) of generation g is pseudo-random
 * bytes seeded by (SEED, g, key(s)), where key(s) is s except in the last
 * 4 KiB chunk of every eight, which repeats the chunk before it (so the
 * array's deduplication gets hits), and in even-numbered 4 KiB chunks the
 * second half of each sector is a repeated 16-byte motif (so LZ4 has
 * something to compress). Writes need not be 4 KiB aligned (BS=3584 makes
 * every write share 4 KiB blocks with its neighbours).
 *
 * Exit status: 0 ok; 1 an I/O error, a failed check, or (without -x) a lost
 * connection; 2 usage; 3 login failed. With -x (a crash is expected) a lost
 * connection ends write mode with status 0 after printing how many writes
 * were acknowledged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

enum {
	SECTOR = 512,
	QD_MAX = 256,
	BS_MAX = 4 << 20,
	READ_CHUNK = 1 << 20,
	ERRORS_SHOWN = 5,
};

struct writer;

struct slot {
	struct writer *w;
	struct scsi_task *task;
	unsigned char *buf;
	struct scsi_iovec iov;
	uint64_t index;
};

struct writer {
	struct iscsi_context *iscsi;
	int lun;
	uint64_t offset, n, bs, seed, gen;
	uint64_t next, acked, errors;
	int inflight, expect_crash;
	struct slot slots[QD_MAX];
	struct slot *free[QD_MAX];
	int nfree;
};

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* sector_fill writes generation gen of sector lba into p. */
static void sector_fill(unsigned char *p, uint64_t seed, uint64_t gen, uint64_t lba)
{
	uint64_t chunk = lba / 8, key = lba;
	if (chunk % 8 == 7)
		key = lba - 8;
	uint64_t s = splitmix(seed ^ splitmix(gen * 0x100000001b3ULL ^ splitmix(key)));
	int half = (chunk % 2 == 0) ? SECTOR / 2 : SECTOR;
	for (int i = 0; i < half; i += 8) {
		s = splitmix(s);
		memcpy(p + i, &s, 8);
	}
	for (int i = half; i < SECTOR; i++)
		p[i] = p[(i - half) % 16];
}

static int write_line(uint64_t index)
{
	char line[32];
	int n = snprintf(line, sizeof line, "A %" PRIu64 "\n", index);
	for (int off = 0; off < n;) {
		ssize_t w = write(STDOUT_FILENO, line + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (int)w;
	}
	return 0;
}

static void write_done(struct iscsi_context *iscsi, int status, void *command_data, void *priv)
{
	struct slot *s = priv;
	struct writer *w = s->w;
	(void)command_data;
	if (status == SCSI_STATUS_GOOD && !(s->task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL &&
					    s->task->residual > 0)) {
		if (write_line(s->index) != 0) {
			perror("ackwriter: writing the acknowledgement");
			exit(1);
		}
		w->acked++;
	} else if (status != SCSI_STATUS_CANCELLED || !w->expect_crash) {
		if (w->errors++ < ERRORS_SHOWN) {
			if (status == SCSI_STATUS_CHECK_CONDITION)
				fprintf(stderr, "ackwriter: write %" PRIu64 ": CHECK CONDITION %s %s\n", s->index,
					scsi_sense_key_str(s->task->sense.key), scsi_sense_ascq_str(s->task->sense.ascq));
			else
				fprintf(stderr, "ackwriter: write %" PRIu64 ": status 0x%x residual %zu: %s\n", s->index,
					status, (size_t)s->task->residual, iscsi_get_error(iscsi));
		}
	}
	scsi_free_scsi_task(s->task);
	s->task = NULL;
	w->inflight--;
	w->free[w->nfree++] = s;
}

static void fill_write(struct writer *w, struct slot *s)
{
	uint64_t lba = (w->offset + s->index * w->bs) / SECTOR;
	for (uint64_t i = 0; i < w->bs / SECTOR; i++)
		sector_fill(s->buf + i * SECTOR, w->seed, w->gen, lba + i);
}

static int submit(struct writer *w)
{
	struct slot *s = w->free[--w->nfree];
	s->index = w->next++;
	fill_write(w, s);
	s->iov.iov_base = s->buf;
	s->iov.iov_len = w->bs;
	uint64_t lba = (w->offset + s->index * w->bs) / SECTOR;
	s->task = iscsi_write16_iov_task(w->iscsi, w->lun, lba, NULL, (uint32_t)w->bs, SECTOR, 0, 0, 0, 0, 0,
					 write_done, s, &s->iov, 1);
	if (s->task == NULL) {
		w->nfree++;
		return -1;
	}
	w->inflight++;
	return 0;
}

/* run_writes returns 0 when all writes were acknowledged, 1 on errors, and
 * sets *lost when the connection died. */
static int run_writes(struct writer *w, int qd, int *lost)
{
	for (int i = 0; i < qd; i++) {
		struct slot *s = &w->slots[i];
		if (posix_memalign((void **)&s->buf, 4096, w->bs) != 0) {
			fprintf(stderr, "ackwriter: out of memory\n");
			return 1;
		}
		s->w = w;
		w->free[w->nfree++] = s;
	}
	*lost = 0;
	while (w->next < w->n || w->inflight > 0) {
		while (w->next < w->n && w->nfree > 0 && w->errors == 0) {
			if (submit(w) != 0) {
				fprintf(stderr, "ackwriter: queueing write %" PRIu64 " failed: %s\n", w->next - 1,
					iscsi_get_error(w->iscsi));
				*lost = 1;
				return 1;
			}
		}
		if (w->errors > 0 && w->inflight == 0)
			break;
		struct pollfd pfd = {.fd = iscsi_get_fd(w->iscsi), .events = (short)iscsi_which_events(w->iscsi)};
		if (poll(&pfd, 1, 200) < 0 && errno != EINTR) {
			perror("ackwriter: poll");
			return 1;
		}
		if (iscsi_service(w->iscsi, pfd.revents) < 0) {
			*lost = 1;
			fprintf(stderr, "ackwriter: connection lost after %" PRIu64 " acknowledged writes, %d in flight: %s\n",
				w->acked, w->inflight, iscsi_get_error(w->iscsi));
			return 1;
		}
	}
	return w->errors ? 1 : 0;
}

/* verify reads the region and checks it against acked[] (one flag a write). */
static int verify(struct iscsi_context *is, int lun, uint64_t offset, uint64_t n, uint64_t bs, uint64_t seed,
		  uint64_t gen, uint64_t prev, const unsigned char *acked)
{
	uint64_t first = offset / SECTOR, sectors = n * bs / SECTOR;
	uint64_t per_write = bs / SECTOR;
	uint64_t bad = 0, acked_writes = 0, new_writes = 0, old_writes = 0, mixed_writes = 0;
	unsigned char want[SECTOR], old[SECTOR];
	uint64_t cur_write = UINT64_MAX;
	int cur_new = 0, cur_old = 0;

	for (uint64_t i = 0; i < n; i++)
		acked_writes += acked[i];
	for (uint64_t done = 0; done < sectors;) {
		uint64_t cnt = sectors - done;
		if (cnt > READ_CHUNK / SECTOR)
			cnt = READ_CHUNK / SECTOR;
		struct scsi_task *t = iscsi_read16_sync(is, lun, first + done, (uint32_t)(cnt * SECTOR), SECTOR, 0, 0, 0, 0, 0);
		if (t == NULL || t->status != SCSI_STATUS_GOOD || t->datain.size != (int)(cnt * SECTOR)) {
			fprintf(stderr, "ackwriter: READ(16) lba %" PRIu64 " x %" PRIu64 " failed: %s\n", first + done, cnt,
				t && t->status == SCSI_STATUS_CHECK_CONDITION ? scsi_sense_key_str(t->sense.key)
									  : iscsi_get_error(is));
			if (t)
				scsi_free_scsi_task(t);
			return 1;
		}
		for (uint64_t k = 0; k < cnt; k++) {
			uint64_t sec = done + k, wi = sec / per_write, lba = first + sec;
			const unsigned char *got = t->datain.data + k * SECTOR;
			if (wi != cur_write) {
				if (cur_write != UINT64_MAX && !acked[cur_write]) {
					if (cur_new && cur_old)
						mixed_writes++;
					else if (cur_new)
						new_writes++;
					else if (cur_old)
						old_writes++;
				}
				cur_write = wi;
				cur_new = cur_old = 0;
			}
			sector_fill(want, seed, gen, lba);
			if (memcmp(got, want, SECTOR) == 0) {
				cur_new = 1;
				continue;
			}
			if (!acked[wi]) {
				if (prev == 0)
					memset(old, 0, SECTOR);
				else
					sector_fill(old, seed, prev, lba);
				if (memcmp(got, old, SECTOR) == 0) {
					cur_old = 1;
					continue;
				}
			}
			if (bad++ < ERRORS_SHOWN) {
				int zero = 1;
				for (int b = 0; b < SECTOR; b++)
					zero &= got[b] == 0;
				fprintf(stderr,
					"ackwriter: lba %" PRIu64 " (write %" PRIu64 ", %s): %s\n", lba, wi,
					acked[wi] ? "acknowledged" : "not acknowledged",
					zero ? "reads zeros"
					: acked[wi] ? "differs from the acknowledged data"
						    : "holds neither the new nor the old data");
			}
		}
		scsi_free_scsi_task(t);
		done += cnt;
	}
	if (cur_write != UINT64_MAX && !acked[cur_write]) {
		if (cur_new && cur_old)
			mixed_writes++;
		else if (cur_new)
			new_writes++;
		else if (cur_old)
			old_writes++;
	}
	printf("verified %" PRIu64 " writes of %" PRIu64 " bytes: %" PRIu64 " acknowledged; not acknowledged: %" PRIu64
	       " new, %" PRIu64 " old, %" PRIu64 " part new part old; %" PRIu64 " bad sectors\n",
	       n, bs, acked_writes, new_writes, old_writes, mixed_writes, bad);
	return bad ? 1 : 0;
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s)
		goto bad;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end == '\0')
		return v;
bad:
	fprintf(stderr, "ackwriter: bad %s: %s\n", what, s);
	exit(2);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ackwriter -m write|verify [options] iscsi://host:port/iqn/lun\n"
		   "  -o OFFSET  first byte (multiple of 512)          [0]\n"
		   "  -n N       number of writes                      [1024]\n"
		   "  -b BS      bytes a write (multiple of 512)       [4096]\n"
		   "  -q QD      writes in flight (1..%d)             [32]\n"
		   "  -g GEN     generation written / expected (>= 1)  [1]\n"
		   "  -p PREV    verify: generation before GEN (0: zeros) [0]\n"
		   "  -a FILE    verify: acknowledgements from write mode\n"
		   "  -S SEED    content seed                          [1]\n"
		   "  -x         write: a lost connection is expected (exit 0)\n"
		   "  -i IQN     initiator name        [iqn.2024-01.org.vfa:ackwriter]\n"
		   "  -T SECS    per-command timeout                   [30]\n",
		QD_MAX);
}

int main(int argc, char **argv)
{
	const char *mode = NULL, *ackfile = NULL, *initiator = "iqn.2024-01.org.vfa:ackwriter";
	uint64_t offset = 0, n = 1024, bs = 4096, gen = 1, prev = 0, seed = 1;
	int qd = 32, expect_crash = 0, timeout_s = 30, opt;
	while ((opt = getopt(argc, argv, "m:o:n:b:q:g:p:a:S:xi:T:h")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 'o': offset = parse_u64(optarg, "offset"); break;
		case 'n': n = parse_u64(optarg, "count"); break;
		case 'b': bs = parse_u64(optarg, "block size"); break;
		case 'q': qd = atoi(optarg); break;
		case 'g': gen = parse_u64(optarg, "generation"); break;
		case 'p': prev = parse_u64(optarg, "previous generation"); break;
		case 'a': ackfile = optarg; break;
		case 'S': seed = parse_u64(optarg, "seed"); break;
		case 'x': expect_crash = 1; break;
		case 'i': initiator = optarg; break;
		case 'T': timeout_s = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || mode == NULL || (strcmp(mode, "write") && strcmp(mode, "verify")) ||
	    offset % SECTOR || bs == 0 || bs % SECTOR || bs > BS_MAX || n == 0 || n > (1u << 26) || qd < 1 ||
	    qd > QD_MAX || gen == 0 || prev >= gen || timeout_s < 1 || (!strcmp(mode, "verify") && !ackfile)) {
		usage(stderr);
		return 2;
	}
	const char *url = argv[optind];

	struct iscsi_context *is = iscsi_create_context(initiator);
	if (is == NULL) {
		fprintf(stderr, "ackwriter: cannot create an iSCSI context\n");
		return 1;
	}
	iscsi_set_noautoreconnect(is, 1);
	iscsi_set_timeout(is, timeout_s);
	struct iscsi_url *u = iscsi_parse_full_url(is, url);
	if (u == NULL) {
		fprintf(stderr, "ackwriter: bad URL %s: %s\n", url, iscsi_get_error(is));
		return 2;
	}
	iscsi_set_targetname(is, u->target);
	iscsi_set_session_type(is, ISCSI_SESSION_NORMAL);
	if (iscsi_full_connect_sync(is, u->portal, u->lun) != 0) {
		fprintf(stderr, "ackwriter: login to %s failed: %s\n", u->portal, iscsi_get_error(is));
		return 3;
	}
	int lun = u->lun;
	iscsi_destroy_url(u);

	if (!strcmp(mode, "verify")) {
		unsigned char *acked = calloc(n, 1);
		FILE *f = fopen(ackfile, "r");
		if (acked == NULL || f == NULL) {
			fprintf(stderr, "ackwriter: %s: %s\n", ackfile, strerror(errno));
			return 1;
		}
		char line[64];
		uint64_t lines = 0;
		while (fgets(line, sizeof line, f)) {
			uint64_t idx;
			/* A torn last line cannot happen: each is one write(2) of a
			 * few bytes; reject anything malformed anyway. */
			if (sscanf(line, "A %" SCNu64, &idx) != 1 || idx >= n || strchr(line, '\n') == NULL) {
				fprintf(stderr, "ackwriter: %s: malformed line %" PRIu64 ": %s\n", ackfile, lines + 1, line);
				return 1;
			}
			if (acked[idx]) {
				fprintf(stderr, "ackwriter: %s: write %" PRIu64 " acknowledged twice\n", ackfile, idx);
				return 1;
			}
			acked[idx] = 1;
			lines++;
		}
		fclose(f);
		int rc = verify(is, lun, offset, n, bs, seed, gen, prev, acked);
		iscsi_logout_sync(is);
		iscsi_destroy_context(is);
		return rc;
	}

	static struct writer w;
	w.iscsi = is;
	w.lun = lun;
	w.offset = offset;
	w.n = n;
	w.bs = bs;
	w.seed = seed;
	w.gen = gen;
	w.expect_crash = expect_crash;
	int lost = 0;
	int rc = run_writes(&w, qd, &lost);
	if (lost && expect_crash) {
		fprintf(stderr, "ackwriter: %" PRIu64 " of %" PRIu64 " writes acknowledged before the connection was lost\n",
			w.acked, n);
		return w.errors ? 1 : 0;
	}
	if (rc == 0)
		iscsi_logout_sync(is);
	iscsi_destroy_context(is);
	if (rc == 0 && expect_crash) {
		fprintf(stderr, "ackwriter: all %" PRIu64 " writes acknowledged; the expected crash did not happen\n", n);
		return 4;
	}
	return rc;
}
