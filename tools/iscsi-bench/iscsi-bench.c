/*
 * iscsi-bench: an iSCSI load generator on libiscsi's asynchronous API.
 *
 * Keeps QD commands in flight on each of NCONN sessions (one TCP connection
 * each, same initiator name, distinct ISIDs) for a duration or one sequential
 * pass, and prints one tab-separated line:
 *
 *   mode bs qd nconn iops MBps avg_lat_us p99_lat_us errors
 *
 * Every command that does not end GOOD with its full transfer (CHECK
 * CONDITION, BUSY, timeout, cancelled by a lost connection, residual
 * underflow, a read that does not match -V's file) counts as an error; the
 * first few are described on stderr, and the exit status is 3 if any
 * occurred. No command is retried and no connection is re-established
 * (libiscsi's automatic reconnect is turned off), so a target fault cannot be
 * hidden.
 *
 * What writes carry matters to a reducing target (-d):
 *   const   one fixed pseudo-random block repeated: every write dedups
 *   random  fresh pseudo-random bytes: unique and incompressible
 *   FILE    FILE's bytes, mmap'ed: sequential modes write byte o of the LUN
 *           from byte (o mod size) of FILE (so one pass of a file onto a
 *           span no larger than it lays the file down verbatim), random
 *           writes take successive chunks of FILE
 *
 * The hot loop allocates nothing of its own: each in-flight slot owns its
 * buffer and iovec (libiscsi still allocates its task and PDU per command).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

enum {
	QD_MAX = 1024,
	CONN_MAX = 64,
	BS_MAX = 16 << 20,
	ERRORS_SHOWN = 5,
	/* Latency histogram: values in ns, 2^SUB_BITS sub-buckets per power of
	 * two (under 1 % error), up to 2^HIST_EXP_MAX ns (~18 minutes). */
	SUB_BITS = 7,
	HIST_EXP_MAX = 40,
	HIST_SIZE = (HIST_EXP_MAX - SUB_BITS + 2) << SUB_BITS,
};

enum data_kind { DATA_CONST, DATA_RANDOM, DATA_FILE };

struct conn;

struct slot {
	struct conn *c;
	struct scsi_task *task;
	unsigned char *buf;
	struct scsi_iovec iov;
	uint64_t lba;
	uint64_t t0_ns;
};

struct conn {
	struct iscsi_context *iscsi;
	int lun;
	int inflight;
	int dead;
	struct slot *free[QD_MAX];
	int nfree;
	uint64_t rng;
};

struct bench {
	/* configuration */
	const char *url, *mode_name, *initiator;
	int write, rand, once, verify, qd, nconn, timeout_s, header;
	uint32_t bs, blksz;
	double secs;
	uint64_t span_bytes, seed;
	enum data_kind data;
	const unsigned char *file;
	size_t file_len;
	unsigned char *const_block;
	/* run state */
	uint64_t nblocks;   /* usable span in LUN blocks */
	uint64_t next_lba;  /* sequential cursor, shared by all connections */
	size_t file_pos;    /* random writes: next chunk of FILE */
	int stopping, pass_done;
	uint64_t done, errors, conn_errors, miscompares;
	uint64_t lat_sum_ns;
	uint64_t hist[HIST_SIZE];
	struct conn conns[CONN_MAX];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void fill_random(unsigned char *p, size_t n, uint64_t *s)
{
	size_t i;
	for (i = 0; i + 8 <= n; i += 8) {
		uint64_t v = xorshift(s);
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (unsigned char)xorshift(s);
}

static int hist_index(uint64_t ns)
{
	if (ns < (1u << SUB_BITS))
		return (int)ns;
	int msb = 63 - __builtin_clzll(ns);
	if (msb > HIST_EXP_MAX)
		return HIST_SIZE - 1;
	int shift = msb - SUB_BITS;
	return ((shift + 1) << SUB_BITS) + (int)((ns >> shift) & ((1u << SUB_BITS) - 1));
}

/* hist_value is the middle of bucket i, in ns. */
static double hist_value(int i)
{
	if (i < (1 << SUB_BITS))
		return i;
	int shift = (i >> SUB_BITS) - 1;
	uint64_t lo = ((uint64_t)((1u << SUB_BITS) | (i & ((1u << SUB_BITS) - 1)))) << shift;
	return (double)lo + (double)((uint64_t)1 << shift) / 2;
}

static double percentile_ns(const struct bench *b, double p)
{
	uint64_t n = 0, want, acc = 0;
	for (int i = 0; i < HIST_SIZE; i++)
		n += b->hist[i];
	if (n == 0)
		return 0;
	want = (uint64_t)(p * (double)n);
	if (want >= n)
		want = n - 1;
	for (int i = 0; i < HIST_SIZE; i++) {
		acc += b->hist[i];
		if (acc > want)
			return hist_value(i);
	}
	return hist_value(HIST_SIZE - 1);
}

static struct bench *B; /* for the completion callback and signal handler only */

static void on_signal(int sig)
{
	(void)sig;
	if (B)
		B->stopping = 1;
}

static void report_error(struct bench *b, struct slot *s, int status, const char *what)
{
	uint64_t n = b->errors + b->conn_errors;
	b->errors++;
	if (n >= ERRORS_SHOWN) {
		if (n == ERRORS_SHOWN)
			fprintf(stderr, "iscsi-bench: further errors not shown\n");
		return;
	}
	if (status == SCSI_STATUS_CHECK_CONDITION && s->task)
		fprintf(stderr, "iscsi-bench: %s lba %" PRIu64 ": CHECK CONDITION %s (0x%x) %s (0x%04x)\n",
			b->mode_name, s->lba, scsi_sense_key_str(s->task->sense.key), s->task->sense.key,
			scsi_sense_ascq_str(s->task->sense.ascq), s->task->sense.ascq);
	else if (status != SCSI_STATUS_GOOD)
		fprintf(stderr, "iscsi-bench: %s lba %" PRIu64 ": %s (status 0x%x): %s\n", b->mode_name,
			s->lba, what, status, iscsi_get_error(s->c->iscsi));
	else
		fprintf(stderr, "iscsi-bench: %s lba %" PRIu64 ": %s\n", b->mode_name, s->lba, what);
}

/* verify_read compares a completed read with FILE; bytes past FILE's end
 * are not checked. */
static int verify_read(struct bench *b, struct slot *s)
{
	uint64_t off = s->lba * b->blksz;
	if (off >= b->file_len)
		return 0;
	size_t n = b->bs;
	if (off + n > b->file_len)
		n = b->file_len - off;
	return memcmp(s->buf, b->file + off, n) != 0;
}

static void complete(struct iscsi_context *iscsi, int status, void *command_data, void *priv)
{
	struct slot *s = priv;
	struct conn *c = s->c;
	struct bench *b = B;
	uint64_t t = now_ns();
	(void)iscsi;
	(void)command_data;

	if (status != SCSI_STATUS_GOOD) {
		report_error(b, s, status, status == SCSI_STATUS_TIMEOUT     ? "timeout"
					   : status == SCSI_STATUS_CANCELLED ? "cancelled"
									     : "failed");
	} else if (s->task->residual_status == SCSI_RESIDUAL_UNDERFLOW && s->task->residual > 0) {
		report_error(b, s, status, "short transfer (residual underflow)");
	} else if (b->verify && !b->write && verify_read(b, s)) {
		b->miscompares++;
		report_error(b, s, status, "data differs from the -V file");
	} else {
		uint64_t lat = t - s->t0_ns;
		b->done++;
		b->lat_sum_ns += lat;
		b->hist[hist_index(lat)]++;
	}
	scsi_free_scsi_task(s->task);
	s->task = NULL;
	c->inflight--;
	c->free[c->nfree++] = s;
}

/* next_lba picks the next I/O's first block, or returns -1 when a once-pass
 * has handed out the whole span. */
static int next_lba(struct bench *b, struct conn *c, uint64_t *lba)
{
	uint64_t nb = b->bs / b->blksz;
	if (b->rand) {
		*lba = xorshift(&c->rng) % (b->nblocks / nb) * nb;
		return 0;
	}
	if (b->next_lba + nb > b->nblocks) {
		if (b->once) {
			b->pass_done = 1;
			return -1;
		}
		b->next_lba = 0;
	}
	*lba = b->next_lba;
	b->next_lba += nb;
	return 0;
}

/* fill_write points the slot's iovec at the data this write carries. */
static void fill_write(struct bench *b, struct conn *c, struct slot *s)
{
	s->iov.iov_base = s->buf;
	switch (b->data) {
	case DATA_CONST:
		s->iov.iov_base = b->const_block;
		break;
	case DATA_RANDOM:
		fill_random(s->buf, b->bs, &c->rng);
		break;
	case DATA_FILE: {
		size_t pos;
		if (b->rand) {
			pos = b->file_pos;
			b->file_pos = (b->file_pos + b->bs) % b->file_len;
		} else {
			pos = (size_t)((s->lba * b->blksz) % b->file_len);
		}
		if (pos + b->bs <= b->file_len) {
			s->iov.iov_base = (void *)(b->file + pos);
		} else {
			for (size_t i = 0; i < b->bs;) {
				size_t n = b->file_len - pos;
				if (n > b->bs - i)
					n = b->bs - i;
				memcpy(s->buf + i, b->file + pos, n);
				i += n;
				pos = (pos + n) % b->file_len;
			}
		}
		break;
	}
	}
}

static int submit(struct bench *b, struct conn *c)
{
	struct slot *s = c->free[--c->nfree];
	if (next_lba(b, c, &s->lba) != 0) {
		c->nfree++;
		return 1;
	}
	s->iov.iov_len = b->bs;
	if (b->write)
		fill_write(b, c, s);
	else
		s->iov.iov_base = s->buf;
	s->t0_ns = now_ns();
	s->task = b->write ? iscsi_write16_iov_task(c->iscsi, c->lun, s->lba, NULL, b->bs, (int)b->blksz, 0, 0, 0, 0, 0,
						    complete, s, &s->iov, 1)
			   : iscsi_read16_iov_task(c->iscsi, c->lun, s->lba, b->bs, (int)b->blksz, 0, 0, 0, 0, 0,
						   complete, s, &s->iov, 1);
	if (s->task == NULL) {
		fprintf(stderr, "iscsi-bench: queueing a command failed: %s\n", iscsi_get_error(c->iscsi));
		c->nfree++;
		b->conn_errors++;
		return -1;
	}
	c->inflight++;
	return 0;
}

static uint64_t parse_size(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		goto bad;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case 't': case 'T': v <<= 40; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end == '\0')
		return v;
bad:
	fprintf(stderr, "iscsi-bench: bad %s: %s\n", what, s);
	exit(2);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iscsi-bench [options] iscsi://[user%%secret@]host[:port]/target-iqn/lun\n"
		"  -m MODE   randread | randwrite | read | write          [randread]\n"
		"  -b SIZE   bytes per command (k/m suffixes)             [4k]\n"
		"  -q N      commands in flight per connection (1..%d)  [32]\n"
		"  -c N      connections, one session each (1..%d)       [1]\n"
		"  -t SECS   duration (with -1: the limit for the pass)   [10]\n"
		"  -s SIZE   use only the first SIZE bytes of the LUN     [all]\n"
		"  -d DATA   what writes carry: const | random | FILE     [const]\n"
		"  -1        once: one sequential pass over the span, then stop\n"
		"  -V        reads: check the data equals -d FILE (byte o of the LUN = byte o of FILE)\n"
		"  -i IQN    initiator name                               [iqn.2024-01.org.vfa:bench]\n"
		"  -T SECS   per-command timeout                          [30]\n"
		"  -S SEED   seed for random LBAs and random data         [1]\n"
		"  -H        print a header line first\n"
		"CHAP: user%%secret in the URL, or LIBISCSI_CHAP_USERNAME/LIBISCSI_CHAP_PASSWORD\n"
		"(mutual: LIBISCSI_CHAP_TARGET_USERNAME/..._PASSWORD).\n"
		"prints: mode bs qd nconn iops MBps avg_lat_us p99_lat_us errors\n"
		"exit: 0 ok, 1 setup failed, 2 usage, 3 I/O errors, 4 -1 pass not finished in time\n",
		QD_MAX, CONN_MAX);
}

static int map_file(struct bench *b, const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		fprintf(stderr, "iscsi-bench: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (st.st_size == 0) {
		fprintf(stderr, "iscsi-bench: %s is empty\n", path);
		return -1;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "iscsi-bench: mmap %s: %s\n", path, strerror(errno));
		return -1;
	}
	madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
	b->file = p;
	b->file_len = (size_t)st.st_size;
	return 0;
}

static int connect_one(struct bench *b, int i)
{
	struct conn *c = &b->conns[i];
	struct iscsi_context *is = iscsi_create_context(b->initiator);
	if (is == NULL) {
		fprintf(stderr, "iscsi-bench: cannot create an iSCSI context\n");
		return -1;
	}
	/* Distinct ISIDs: same initiator name, independent sessions. */
	iscsi_set_isid_random(is, 0x10000u + (uint32_t)i, 0);
	iscsi_set_header_digest(is, ISCSI_HEADER_DIGEST_NONE); /* the URL may override */
	iscsi_set_noautoreconnect(is, 1);
	iscsi_set_timeout(is, b->timeout_s);
	struct iscsi_url *u = iscsi_parse_full_url(is, b->url);
	if (u == NULL) {
		fprintf(stderr, "iscsi-bench: bad URL %s: %s\n", b->url, iscsi_get_error(is));
		iscsi_destroy_context(is);
		return -1;
	}
	iscsi_set_targetname(is, u->target);
	iscsi_set_session_type(is, ISCSI_SESSION_NORMAL);
	if (iscsi_full_connect_sync(is, u->portal, u->lun) != 0) {
		fprintf(stderr, "iscsi-bench: login to %s (%s) failed: %s\n", u->portal, u->target,
			iscsi_get_error(is));
		iscsi_destroy_url(u);
		iscsi_destroy_context(is);
		return -1;
	}
	c->iscsi = is;
	c->lun = u->lun;
	c->rng = b->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i + 1;
	iscsi_destroy_url(u);
	return 0;
}

static int read_capacity(struct bench *b)
{
	struct conn *c = &b->conns[0];
	struct scsi_task *t = iscsi_readcapacity16_sync(c->iscsi, c->lun);
	if (t == NULL || t->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "iscsi-bench: READ CAPACITY(16) failed: %s\n", iscsi_get_error(c->iscsi));
		if (t)
			scsi_free_scsi_task(t);
		return -1;
	}
	struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(t);
	if (rc == NULL || rc->block_length == 0) {
		fprintf(stderr, "iscsi-bench: cannot parse READ CAPACITY(16) data\n");
		scsi_free_scsi_task(t);
		return -1;
	}
	b->blksz = rc->block_length;
	b->nblocks = rc->returned_lba + 1;
	scsi_free_scsi_task(t);
	if (b->bs % b->blksz != 0) {
		fprintf(stderr, "iscsi-bench: -b %u is not a multiple of the LUN's %u-byte blocks\n", b->bs, b->blksz);
		return -1;
	}
	if (b->span_bytes) {
		uint64_t sp = b->span_bytes / b->blksz;
		if (sp > b->nblocks) {
			fprintf(stderr, "iscsi-bench: -s %" PRIu64 " exceeds the LUN (%" PRIu64 " bytes)\n",
				b->span_bytes, b->nblocks * b->blksz);
			return -1;
		}
		b->nblocks = sp;
	}
	if (b->nblocks < b->bs / b->blksz) {
		fprintf(stderr, "iscsi-bench: span smaller than one command\n");
		return -1;
	}
	return 0;
}

static int alloc_slots(struct bench *b, struct conn *c)
{
	for (int j = 0; j < b->qd; j++) {
		struct slot *s = calloc(1, sizeof *s);
		if (s == NULL || posix_memalign((void **)&s->buf, 4096, b->bs) != 0) {
			fprintf(stderr, "iscsi-bench: out of memory\n");
			return -1;
		}
		memset(s->buf, 0, b->bs);
		s->c = c;
		c->free[c->nfree++] = s;
	}
	return 0;
}

/* run drives all connections until the time is up or the pass is done, then
 * drains. Returns the elapsed time in ns. */
static uint64_t run(struct bench *b)
{
	struct pollfd pfd[CONN_MAX];
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(b->secs * 1e9), last = t0;
	uint64_t drain_deadline = 0;
	for (;;) {
		uint64_t t = now_ns();
		if (t >= end)
			b->stopping = 1;
		int outstanding = 0;
		for (int i = 0; i < b->nconn; i++) {
			struct conn *c = &b->conns[i];
			while (!b->stopping && !c->dead && c->nfree > 0) {
				int r = submit(b, c);
				if (r > 0) { /* once-pass complete */
					b->stopping = 1;
					break;
				}
				if (r < 0) {
					c->dead = 1;
					b->stopping = 1;
				}
			}
			if (!c->dead)
				outstanding += c->inflight;
			pfd[i].fd = c->dead ? -1 : iscsi_get_fd(c->iscsi);
			pfd[i].events = c->dead ? 0 : (short)iscsi_which_events(c->iscsi);
			pfd[i].revents = 0;
		}
		if (b->stopping && outstanding == 0)
			break;
		if (b->stopping && drain_deadline == 0)
			drain_deadline = t + (uint64_t)(b->timeout_s + 5) * 1000000000u;
		if (drain_deadline && t > drain_deadline) {
			/* They are cancelled, and counted, when the context is destroyed. */
			fprintf(stderr, "iscsi-bench: %d commands still outstanding after the drain timeout\n", outstanding);
			break;
		}
		/* The timeout wakes libiscsi's command-timeout scan too. */
		if (poll(pfd, (nfds_t)b->nconn, 200) < 0 && errno != EINTR) {
			perror("iscsi-bench: poll");
			b->conn_errors++;
			break;
		}
		for (int i = 0; i < b->nconn; i++) {
			struct conn *c = &b->conns[i];
			if (c->dead)
				continue;
			uint64_t before = b->done;
			if (iscsi_service(c->iscsi, pfd[i].revents) < 0) {
				fprintf(stderr, "iscsi-bench: connection %d failed: %s\n", i, iscsi_get_error(c->iscsi));
				b->conn_errors++;
				c->dead = 1;
				b->stopping = 1;
			}
			if (b->done != before)
				last = now_ns();
		}
	}
	return (last > t0 ? last : now_ns()) - t0;
}

int main(int argc, char **argv)
{
	static struct bench bench;
	struct bench *b = &bench;
	const char *data = "const";
	int opt;

	b->mode_name = "randread";
	b->bs = 4096;
	b->qd = 32;
	b->nconn = 1;
	b->secs = 10;
	b->timeout_s = 30;
	b->seed = 1;
	b->initiator = "iqn.2024-01.org.vfa:bench";
	while ((opt = getopt(argc, argv, "m:b:q:c:t:s:d:1Vi:T:S:Hh")) != -1) {
		switch (opt) {
		case 'm': b->mode_name = optarg; break;
		case 'b': b->bs = (uint32_t)parse_size(optarg, "block size"); break;
		case 'q': b->qd = atoi(optarg); break;
		case 'c': b->nconn = atoi(optarg); break;
		case 't': b->secs = atof(optarg); break;
		case 's': b->span_bytes = parse_size(optarg, "span"); break;
		case 'd': data = optarg; break;
		case '1': b->once = 1; break;
		case 'V': b->verify = 1; break;
		case 'i': b->initiator = optarg; break;
		case 'T': b->timeout_s = atoi(optarg); break;
		case 'S': b->seed = strtoull(optarg, NULL, 0); break;
		case 'H': b->header = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	b->url = argv[optind];
	if (!strcmp(b->mode_name, "randread")) b->rand = 1;
	else if (!strcmp(b->mode_name, "randwrite")) b->rand = b->write = 1;
	else if (!strcmp(b->mode_name, "read")) ;
	else if (!strcmp(b->mode_name, "write")) b->write = 1;
	else { fprintf(stderr, "iscsi-bench: unknown mode %s\n", b->mode_name); return 2; }
	if (b->bs == 0 || b->bs > BS_MAX || b->qd < 1 || b->qd > QD_MAX || b->nconn < 1 || b->nconn > CONN_MAX ||
	    !(b->secs > 0) || b->timeout_s < 1) {
		fprintf(stderr, "iscsi-bench: out of range: need 0 < bs <= %d, 1 <= qd <= %d, 1 <= nconn <= %d, t > 0, T >= 1\n",
			BS_MAX, QD_MAX, CONN_MAX);
		return 2;
	}
	if (b->once && b->rand) {
		fprintf(stderr, "iscsi-bench: -1 needs a sequential mode (read or write)\n");
		return 2;
	}
	if (b->seed == 0)
		b->seed = 1;
	if (!strcmp(data, "const")) {
		uint64_t s = 0x5eed5eed5eedULL;
		b->data = DATA_CONST;
		if (posix_memalign((void **)&b->const_block, 4096, b->bs) != 0)
			return 1;
		fill_random(b->const_block, b->bs, &s);
	} else if (!strcmp(data, "random")) {
		b->data = DATA_RANDOM;
	} else {
		b->data = DATA_FILE;
		if (map_file(b, data) != 0)
			return 1;
	}
	if (b->verify && b->data != DATA_FILE) {
		fprintf(stderr, "iscsi-bench: -V needs -d FILE\n");
		return 2;
	}

	B = b;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	for (int i = 0; i < b->nconn; i++) {
		if (connect_one(b, i) != 0)
			return 1;
		if (i == 0 && read_capacity(b) != 0)
			return 1;
		if (alloc_slots(b, &b->conns[i]) != 0)
			return 1;
	}

	uint64_t el = run(b);
	double secs = (double)el / 1e9;
	int incomplete = b->once && !b->pass_done;

	for (int i = 0; i < b->nconn; i++) {
		struct conn *c = &b->conns[i];
		if (!c->dead && c->inflight == 0)
			iscsi_logout_sync(c->iscsi);
		/* Cancels whatever is still queued: those callbacks count as errors. */
		iscsi_destroy_context(c->iscsi);
	}

	if (b->header)
		printf("mode\tbs\tqd\tnconn\tiops\tMBps\tavg_lat_us\tp99_lat_us\terrors\n");
	uint64_t errors = b->errors + b->conn_errors;
	printf("%s\t%u\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%" PRIu64 "\n", b->mode_name, b->bs, b->qd, b->nconn,
	       secs > 0 ? (double)b->done / secs : 0, secs > 0 ? (double)b->done * b->bs / secs / 1e6 : 0,
	       b->done ? (double)b->lat_sum_ns / (double)b->done / 1e3 : 0, percentile_ns(b, 0.99) / 1e3, errors);
	fflush(stdout);
	if (b->miscompares)
		fprintf(stderr, "iscsi-bench: %" PRIu64 " reads differed from %s\n", b->miscompares, data);
	if (errors)
		return 3;
	if (incomplete) {
		fprintf(stderr, "iscsi-bench: -1: the pass did not finish within -t %g s\n", b->secs);
		return 4;
	}
	return 0;
}
