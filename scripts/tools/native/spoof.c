/*
 * realmnet_spoof: sends UDP datagrams with forged source addresses, for the abuse benchmark and the
 * attack tests (scripts/bench/abuse.ts, test/e2e/abuse.test.ts). Test tooling only: it runs inside
 * the testbed's attacker namespace, never anywhere else.
 *
 * Node cannot forge a source address (the kernel fills it in for node:dgram), so this builds the
 * IP and UDP headers itself and sends them on a raw socket (IPPROTO_RAW, which implies IP_HDRINCL
 * for IPv4; IPV6_HDRINCL for IPv6), in batches of up to 64 with sendmmsg.
 *
 *   realmnet_spoof --dst ADDR --dport PORT --templates FILE
 *                  (--src ADDR | --src-prefix ADDR/LEN) [--sport PORT] [--rate N]
 *                  (--count N | --seconds S) [--order cycle|random] [--batch N]
 *
 * The payloads come from FILE: a sequence of records, each a 2-byte big-endian length and that many
 * bytes (1..1232), written by the TypeScript side (valid HELLOs, sealed LOOKUPs, garbage). Records
 * are sent in file order, wrapping around (cycle, the default: a file of N sealed messages with
 * consecutive sequence numbers is sent once each with --count N), or picked at random.
 * --src-prefix draws every datagram's source at random inside the prefix (host bits random), so the
 * receiver sees many distinct sources; --src uses one address (the victim's). --sport 0 (default)
 * picks a random source port per datagram. --rate 0 (default) sends as fast as the socket takes.
 *
 * Prints one JSON line on stdout: {"sent":N,"bytes":B,"errors":E,"seconds":S}, where bytes counts
 * whole IP packets (as the testbed's nftables counters do). Exit 2 on a usage error, 1 on a system
 * error (e.g. not root: raw sockets need CAP_NET_RAW).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36
#endif

#define MAX_PAYLOAD 1232
#define MAX_BATCH 64
#define IP4_HDR 20
#define IP6_HDR 40
#define UDP_HDR 8
#define SLOT (IP6_HDR + UDP_HDR + MAX_PAYLOAD)

struct tmpl {
  uint16_t len;
  const uint8_t *data;
};

static void usage(const char *why) {
  fprintf(stderr,
          "realmnet_spoof: %s\n"
          "usage: realmnet_spoof --dst ADDR --dport PORT --templates FILE (--src ADDR | --src-prefix ADDR/LEN)\n"
          "                      [--sport PORT] [--rate N] (--count N | --seconds S) [--order cycle|random] [--batch N]\n",
          why);
  exit(2);
}

/* xorshift64*: fast, and plenty random for picking source addresses and ports. */
static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long parse_num(const char *flag, const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || end == s || v < min || v > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: \"%s\" is not an integer in %ld..%ld", flag, s, min, max);
    usage(msg);
  }
  return v;
}

/* One's-complement sum over a byte range (network order), folded later. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n) {
  while (n > 1) {
    sum += (uint32_t)((p[0] << 8) | p[1]);
    p += 2;
    n -= 2;
  }
  if (n == 1) sum += (uint32_t)(p[0] << 8);
  return sum;
}

static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static struct tmpl *load_templates(const char *path, size_t *count) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    fprintf(stderr, "realmnet_spoof: cannot open templates %s: %s\n", path, strerror(errno));
    exit(2);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    fprintf(stderr, "realmnet_spoof: templates %s is empty or unreadable\n", path);
    exit(2);
  }
  uint8_t *buf = malloc((size_t)st.st_size);
  if (buf == NULL) exit(1);
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r <= 0) {
      fprintf(stderr, "realmnet_spoof: reading %s: %s\n", path, r == 0 ? "short read" : strerror(errno));
      exit(1);
    }
    got += (size_t)r;
  }
  close(fd);
  size_t cap = 1024, n = 0, off = 0;
  struct tmpl *t = malloc(cap * sizeof *t);
  if (t == NULL) exit(1);
  while (off < got) {
    if (off + 2 > got) break;
    uint16_t len = (uint16_t)((buf[off] << 8) | buf[off + 1]);
    if (len == 0 || len > MAX_PAYLOAD || off + 2 + len > got) {
      fprintf(stderr, "realmnet_spoof: %s: record %zu at byte %zu has a bad length %u (1..%d, within the file)\n", path, n, off, len, MAX_PAYLOAD);
      exit(2);
    }
    if (n == cap) {
      cap *= 2;
      t = realloc(t, cap * sizeof *t);
      if (t == NULL) exit(1);
    }
    t[n].len = len;
    t[n].data = buf + off + 2;
    n++;
    off += 2 + (size_t)len;
  }
  if (off != got || n == 0) {
    fprintf(stderr, "realmnet_spoof: %s is not a sequence of [u16 length][bytes] records\n", path);
    exit(2);
  }
  *count = n;
  return t;
}

int main(int argc, char **argv) {
  const char *dst = NULL, *src = NULL, *src_prefix = NULL, *templates = NULL, *order = "cycle";
  long dport = -1, sport = 0, rate = 0, count = -1, batch = MAX_BATCH;
  double seconds = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) {
      char msg[120];
      snprintf(msg, sizeof msg, "%s needs a value", a);
      usage(msg);
    }
    const char *v = argv[++i];
    if (strcmp(a, "--dst") == 0) dst = v;
    else if (strcmp(a, "--dport") == 0) dport = parse_num(a, v, 1, 65535);
    else if (strcmp(a, "--src") == 0) src = v;
    else if (strcmp(a, "--src-prefix") == 0) src_prefix = v;
    else if (strcmp(a, "--sport") == 0) sport = parse_num(a, v, 0, 65535);
    else if (strcmp(a, "--rate") == 0) rate = parse_num(a, v, 0, 100000000);
    else if (strcmp(a, "--count") == 0) count = parse_num(a, v, 1, 1000000000000L);
    else if (strcmp(a, "--seconds") == 0) {
      char *end;
      seconds = strtod(v, &end);
      if (*end != '\0' || !(seconds > 0 && seconds <= 86400)) usage("--seconds must be a number in (0, 86400]");
    } else if (strcmp(a, "--templates") == 0) templates = v;
    else if (strcmp(a, "--order") == 0) {
      if (strcmp(v, "cycle") != 0 && strcmp(v, "random") != 0) usage("--order must be cycle or random");
      order = v;
    } else if (strcmp(a, "--batch") == 0) batch = parse_num(a, v, 1, MAX_BATCH);
    else {
      char msg[120];
      snprintf(msg, sizeof msg, "unknown option %s", a);
      usage(msg);
    }
  }
  if (dst == NULL) usage("--dst is required");
  if (dport < 0) usage("--dport is required");
  if (templates == NULL) usage("--templates is required");
  if ((src == NULL) == (src_prefix == NULL)) usage("give exactly one of --src and --src-prefix");
  if ((count < 0) == (seconds < 0)) usage("give exactly one of --count and --seconds");

  int fam = strchr(dst, ':') != NULL ? AF_INET6 : AF_INET;
  uint8_t dst_addr[16], src_addr[16];
  int addr_len = fam == AF_INET6 ? 16 : 4;
  if (inet_pton(fam, dst, dst_addr) != 1) usage("--dst is not an IPv4 or IPv6 address");
  int src_bits = addr_len * 8; /* fixed bits of the source */
  {
    char tmp[64];
    const char *s = src != NULL ? src : src_prefix;
    if (strlen(s) >= sizeof tmp) usage("source address too long");
    strcpy(tmp, s);
    char *slash = strchr(tmp, '/');
    if (src_prefix != NULL) {
      if (slash == NULL) usage("--src-prefix needs ADDR/LEN");
      *slash = '\0';
      src_bits = (int)parse_num("--src-prefix length", slash + 1, 0, addr_len * 8);
    } else if (slash != NULL) {
      usage("--src takes one address; use --src-prefix for a prefix");
    }
    if (inet_pton(fam, tmp, src_addr) != 1) usage("the source is not an address of the same family as --dst");
  }

  size_t ntmpl = 0;
  struct tmpl *tm = load_templates(templates, &ntmpl);
  rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;

  int fd = socket(fam, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    fprintf(stderr, "realmnet_spoof: raw socket: %s (needs root or CAP_NET_RAW)\n", strerror(errno));
    return 1;
  }
  if (fam == AF_INET6) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof one) != 0) {
      fprintf(stderr, "realmnet_spoof: IPV6_HDRINCL: %s (kernel too old?)\n", strerror(errno));
      return 1;
    }
  }
  int sndbuf = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  static uint8_t slots[MAX_BATCH][SLOT];
  struct iovec iov[MAX_BATCH];
  struct mmsghdr msgs[MAX_BATCH];
  struct sockaddr_in sin;
  struct sockaddr_in6 sin6;
  memset(&sin, 0, sizeof sin);
  memset(&sin6, 0, sizeof sin6);
  sin.sin_family = AF_INET;
  memcpy(&sin.sin_addr, dst_addr, 4);
  sin6.sin6_family = AF_INET6;
  memcpy(&sin6.sin6_addr, dst_addr, 16);
  memset(msgs, 0, sizeof msgs);

  uint64_t sent = 0, bytes = 0, errors = 0, next = 0;
  const double t0 = now_s();
  const double end_at = seconds > 0 ? t0 + seconds : 0;
  for (;;) {
    uint64_t want = (uint64_t)batch;
    if (count >= 0) {
      if (sent + errors >= (uint64_t)count) break;
      if ((uint64_t)count - sent - errors < want) want = (uint64_t)count - sent - errors;
    }
    double now = now_s();
    if (end_at > 0 && now >= end_at) break;
    if (rate > 0) {
      /* Pacing: datagram k is due at t0 + k/rate; sleep until the first of this batch is due. */
      double due = t0 + (double)(sent + errors) / (double)rate;
      if (due > now) {
        double d = due - now;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    for (uint64_t k = 0; k < want; k++) {
      const struct tmpl *t = &tm[order[0] == 'r' ? rnd() % ntmpl : next++ % ntmpl];
      uint8_t *p = slots[k];
      uint8_t s[16];
      memcpy(s, src_addr, (size_t)addr_len);
      for (int bit = src_bits; bit < addr_len * 8; bit++) {
        uint8_t m = (uint8_t)(0x80 >> (bit % 8));
        if (rnd() & 1) s[bit / 8] |= m;
        else s[bit / 8] &= (uint8_t)~m;
      }
      uint16_t sp = sport != 0 ? (uint16_t)sport : (uint16_t)(1024 + rnd() % 64512);
      size_t ulen = UDP_HDR + t->len;
      size_t hl = fam == AF_INET6 ? IP6_HDR : IP4_HDR;
      uint8_t *u = p + hl;
      u[0] = (uint8_t)(sp >> 8);
      u[1] = (uint8_t)sp;
      u[2] = (uint8_t)(dport >> 8);
      u[3] = (uint8_t)dport;
      u[4] = (uint8_t)(ulen >> 8);
      u[5] = (uint8_t)ulen;
      u[6] = u[7] = 0;
      memcpy(u + UDP_HDR, t->data, t->len);
      /* UDP checksum over the pseudo-header (RFC 768, RFC 8200 8.1): mandatory for IPv6. */
      uint32_t sum = 0;
      sum = csum_add(sum, s, (size_t)addr_len);
      sum = csum_add(sum, dst_addr, (size_t)addr_len);
      sum += 17;
      sum += (uint32_t)ulen;
      sum = csum_add(sum, u, ulen);
      uint16_t c = csum_fold(sum);
      if (c == 0) c = 0xffff;
      u[6] = (uint8_t)(c >> 8);
      u[7] = (uint8_t)c;
      if (fam == AF_INET) {
        size_t tot = IP4_HDR + ulen;
        p[0] = 0x45;
        p[1] = 0;
        p[2] = (uint8_t)(tot >> 8);
        p[3] = (uint8_t)tot;
        uint16_t id = (uint16_t)rnd();
        p[4] = (uint8_t)(id >> 8);
        p[5] = (uint8_t)id;
        p[6] = 0x40; /* DF */
        p[7] = 0;
        p[8] = 64;
        p[9] = 17;
        p[10] = p[11] = 0;
        memcpy(p + 12, s, 4);
        memcpy(p + 16, dst_addr, 4);
        uint16_t hc = csum_fold(csum_add(0, p, IP4_HDR));
        p[10] = (uint8_t)(hc >> 8);
        p[11] = (uint8_t)hc;
        iov[k].iov_len = tot;
        msgs[k].msg_hdr.msg_name = &sin;
        msgs[k].msg_hdr.msg_namelen = sizeof sin;
      } else {
        p[0] = 0x60;
        p[1] = p[2] = p[3] = 0;
        p[4] = (uint8_t)(ulen >> 8);
        p[5] = (uint8_t)ulen;
        p[6] = 17;
        p[7] = 64;
        memcpy(p + 8, s, 16);
        memcpy(p + 24, dst_addr, 16);
        iov[k].iov_len = IP6_HDR + ulen;
        msgs[k].msg_hdr.msg_name = &sin6;
        msgs[k].msg_hdr.msg_namelen = sizeof sin6;
      }
      iov[k].iov_base = p;
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
    }
    unsigned done = 0;
    while (done < want) {
      int r = sendmmsg(fd, msgs + done, (unsigned)(want - done), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        /* ENOBUFS/EAGAIN (queue full) and EPERM (a netfilter drop) lose this datagram: count it, go on. */
        errors++;
        done++;
        continue;
      }
      for (int k = 0; k < r; k++) bytes += iov[done + (unsigned)k].iov_len;
      sent += (uint64_t)r;
      done += (unsigned)r;
    }
  }
  printf("{\"sent\":%llu,\"bytes\":%llu,\"errors\":%llu,\"seconds\":%.3f}\n", (unsigned long long)sent, (unsigned long long)bytes,
         (unsigned long long)errors, now_s() - t0);
  close(fd);
  return 0;
}
