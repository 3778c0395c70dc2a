/*
 * nsh-flowcount: an NSH-aware service function in C, written against
 * docs/nsh.md alone (no pktchain code), to show that any language will do.
 *
 * It takes NSH (RFC 8300) straight over Ethernet (EtherType 0x894F) on an
 * interface, and/or over VXLAN-GPE on a UDP port, and for every packet:
 *
 *   - checks the NSH (version, MD type, Length, the MD type 2 context
 *     headers), and drops what is malformed, counted by reason;
 *   - counts packets and bytes per flow of the inner packet (the IPv4/IPv6
 *     5-tuple of the inner Ethernet frame), in a table of fixed size: a flow
 *     that finds the table full is counted as an overflow;
 *   - with MD type 2, appends a context header of class 0xFFF6 (pktchain's),
 *     type 0x80, whose 4-byte value is this flow's packet count so far, when
 *     the NSH has room for it (252 bytes at most); with MD type 1, carries the
 *     fixed context as it came;
 *   - takes one off the service index and sends the packet back: over
 *     Ethernet to the MAC it came from (out of --egress when given), over UDP
 *     to the address it came from.
 *
 * SIGUSR1 writes the counters as JSON to the --stats file; SIGTERM and SIGINT
 * write them and end the program with status 0.
 *
 *   nsh-flowcount --interface eth0 [--egress eth1] [--udp [HOST:]PORT]
 *                 --stats FILE [--flows N] [--count N]
 *
 * Build: make -C examples/nsh (or `make setup` at the top: build/nsh-flowcount).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define ETH_P_NSH 0x894F
#define ETH_HEADER 14
#define GPE_HEADER 8
#define NSH_BASE 8          /* base header + service path header (RFC 8300 §2.2, §2.3) */
#define NSH_MD1_LENGTH 24   /* MD type 1: Length is 0x6 words */
#define NSH_MAX_LENGTH 252  /* the 6-bit Length field, in 4-byte words */
#define TLV_HEADER 4
#define MD_CLASS_PKTCHAIN 0xFFF6 /* the first Experimental MD class (RFC 8300 §11.2.4) */
#define TLV_FLOW_COUNT 0x80
#define FLOW_TLV_SIZE (TLV_HEADER + 4)
#define MAX_FRAME 65536
#define BATCH 64

/* Why a packet was not answered: the names match pktchain's reasons. */
enum drop {
    DROP_TRUNCATED_ETHERNET,
    DROP_NOT_NSH,
    DROP_TRUNCATED_VXLAN_GPE,
    DROP_VXLAN_GPE_VERSION,
    DROP_GPE_NOT_NSH,
    DROP_TRUNCATED_NSH,
    DROP_NSH_VERSION,
    DROP_NSH_MD_TYPE,
    DROP_UNSUPPORTED_MD_TYPE,
    DROP_NSH_LENGTH,
    DROP_NSH_TLV,
    DROP_SI_EXHAUSTED,
    DROP_SEND_ERROR,
    DROP_REASONS
};

static const char *const drop_names[DROP_REASONS] = {
    "truncated-ethernet", "not-nsh",     "truncated-vxlan-gpe", "vxlan-gpe-version",
    "gpe-not-nsh",        "truncated-nsh", "nsh-version",       "nsh-md-type",
    "unsupported-md-type", "nsh-length", "nsh-tlv",             "service-index-exhausted",
    "send-error",
};

struct flow_key {
    uint8_t version; /* 4 or 6 */
    uint8_t proto;
    uint16_t sport, dport;
    uint8_t src[16], dst[16];
};

struct flow {
    struct flow_key key;
    uint64_t packets, bytes;
    int used;
};

struct counters {
    uint64_t packets_in, bytes_in, packets_out, bytes_out;
    uint64_t drops[DROP_REASONS];
    uint64_t md1, md2, tlv_added, tlv_no_room, inner_not_ip, flow_overflow;
    uint64_t socket_drops; /* frames the kernel dropped for want of room in our queue */
};

static struct counters counters;
static int packet_fds[2] = {-1, -1}; /* the AF_PACKET sockets, for their drop counts */
#define RECEIVE_BUFFER (8 << 20) /* room for a burst of 64 KB super-frames */
static struct flow *flows;  /* open addressing, linear probing */
static size_t flow_slots;   /* a power of two, twice the capacity at least */
static size_t flow_capacity;
static size_t flow_count;

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t stats_asked;
static const char *stats_path;

static void on_signal(int signum)
{
    if (signum == SIGUSR1)
        stats_asked = 1;
    else
        stop_signal = signum;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------------ flows */

static uint64_t flow_hash(const struct flow_key *key)
{
    const uint8_t *p = (const uint8_t *)key;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < sizeof *key; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The flow's entry, made on first sight; NULL when the table is full. */
static struct flow *flow_lookup(const struct flow_key *key)
{
    size_t mask = flow_slots - 1;
    for (size_t i = flow_hash(key) & mask;; i = (i + 1) & mask) {
        struct flow *f = &flows[i];
        if (!f->used) {
            if (flow_count >= flow_capacity)
                return NULL;
            f->used = 1;
            f->key = *key;
            flow_count++;
            return f;
        }
        if (memcmp(&f->key, key, sizeof *key) == 0)
            return f;
    }
}

static int has_ports(uint8_t proto) { return proto == 6 || proto == 17 || proto == 132 || proto == 136; }

/* The 5-tuple of an IPv4 or IPv6 packet of `len` bytes; 0 when it is not one. */
static int ip_key(const uint8_t *p, size_t len, struct flow_key *key)
{
    if (len < 1)
        return 0;
    if (p[0] >> 4 == 4) {
        size_t ihl = (size_t)(p[0] & 0x0F) * 4;
        if (len < 20 || ihl < 20 || len < ihl)
            return 0;
        key->version = 4;
        key->proto = p[9];
        memcpy(key->src, p + 12, 4);
        memcpy(key->dst, p + 16, 4);
        /* a later fragment has no ports */
        if ((get16(p + 6) & 0x1FFF) == 0 && has_ports(key->proto) && len >= ihl + 4) {
            key->sport = get16(p + ihl);
            key->dport = get16(p + ihl + 2);
        }
        return 1;
    }
    if (p[0] >> 4 == 6) {
        if (len < 40)
            return 0;
        key->version = 6;
        memcpy(key->src, p + 8, 16);
        memcpy(key->dst, p + 24, 16);
        uint8_t next = p[6];
        size_t off = 40;
        int later_fragment = 0;
        /* hop-by-hop, routing, fragment and destination options (RFC 8200 §4) */
        for (int n = 0; n < 8 && (next == 0 || next == 43 || next == 44 || next == 60); n++) {
            if (len < off + 8)
                return 0;
            if (next == 44) {
                later_fragment = (get16(p + off + 2) & 0xFFF8) != 0;
                next = p[off];
                off += 8;
            } else {
                size_t ext = ((size_t)p[off + 1] + 1) * 8;
                next = p[off];
                off += ext;
            }
        }
        key->proto = next;
        if (!later_fragment && has_ports(next) && len >= off + 4) {
            key->sport = get16(p + off);
            key->dport = get16(p + off + 2);
        }
        return 1;
    }
    return 0;
}

/* The flow of the inner packet, by the NSH's next protocol (1 IPv4, 2 IPv6, 3 Ethernet). */
static int inner_key(const uint8_t *p, size_t len, uint8_t next_protocol, struct flow_key *key)
{
    memset(key, 0, sizeof *key);
    if (next_protocol == 1 || next_protocol == 2)
        return ip_key(p, len, key);
    if (next_protocol != 3 || len < ETH_HEADER)
        return 0;
    size_t off = 12;
    uint16_t type = get16(p + off);
    for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88A8); tags++) {
        if (len < off + 6)
            return 0;
        off += 4;
        type = get16(p + off);
    }
    off += 2;
    if (type != 0x0800 && type != 0x86DD)
        return 0;
    return ip_key(p + off, len - off, key);
}

/* ------------------------------------------------------------------ NSH */

/*
 * Check the NSH at in[0..len) and write the answer's NSH and inner packet to
 * out (room for len + FLOW_TLV_SIZE bytes); the answer's length, or -1 with
 * *why set.
 */
static long process_nsh(const uint8_t *in, size_t len, uint8_t *out, enum drop *why)
{
    if (len < NSH_BASE) {
        *why = DROP_TRUNCATED_NSH;
        return -1;
    }
    unsigned version = in[0] >> 6;
    size_t length = (size_t)(in[1] & 0x3F) * 4;
    unsigned md_type = in[2] & 0x0F;
    uint8_t next_protocol = in[3];
    uint8_t si = in[7];
    if (version != 0) {
        *why = DROP_NSH_VERSION;
        return -1;
    }
    if (md_type == 0) {
        *why = DROP_NSH_MD_TYPE;
        return -1;
    }
    if (md_type != 1 && md_type != 2) {
        *why = DROP_UNSUPPORTED_MD_TYPE;
        return -1;
    }
    if ((md_type == 1 && length != NSH_MD1_LENGTH) || length < NSH_BASE) {
        *why = DROP_NSH_LENGTH;
        return -1;
    }
    if (length > len) {
        *why = DROP_TRUNCATED_NSH;
        return -1;
    }
    if (md_type == 2) {
        /* the context headers must fill the Length exactly (RFC 8300 §2.5.1) */
        size_t p = NSH_BASE;
        while (p < length) {
            if (length - p < TLV_HEADER) {
                *why = DROP_NSH_TLV;
                return -1;
            }
            size_t padded = ((size_t)(in[p + 3] & 0x7F) + 3) / 4 * 4;
            if (padded > length - p - TLV_HEADER) {
                *why = DROP_NSH_TLV;
                return -1;
            }
            p += TLV_HEADER + padded;
        }
    }
    if (si == 0) {
        *why = DROP_SI_EXHAUSTED;
        return -1;
    }

    const uint8_t *inner = in + length;
    size_t inner_len = len - length;
    struct flow_key key;
    struct flow *flow = NULL;
    if (inner_key(inner, inner_len, next_protocol, &key)) {
        flow = flow_lookup(&key);
        if (flow == NULL) {
            counters.flow_overflow++;
        } else {
            flow->packets++;
            flow->bytes += inner_len;
        }
    } else {
        counters.inner_not_ip++;
    }

    memcpy(out, in, length);
    out[7] = (uint8_t)(si - 1); /* the service function decrements SI (§2.3) */
    size_t out_length = length;
    if (md_type == 1) {
        counters.md1++;
    } else {
        counters.md2++;
        if (flow != NULL) {
            if (length + FLOW_TLV_SIZE <= NSH_MAX_LENGTH) {
                uint8_t *tlv = out + length;
                put16(tlv, MD_CLASS_PKTCHAIN);
                tlv[2] = TLV_FLOW_COUNT;
                tlv[3] = 4;
                uint64_t count = flow->packets;
                put32(tlv + 4, count > UINT32_MAX ? UINT32_MAX : (uint32_t)count);
                out_length += FLOW_TLV_SIZE;
                out[1] = (uint8_t)((out[1] & 0xC0) | (out_length / 4)); /* Length */
                counters.tlv_added++;
            } else {
                counters.tlv_no_room++;
            }
        }
    }
    memcpy(out + out_length, inner, inner_len);
    return (long)(out_length + inner_len);
}

/* ------------------------------------------------------------------ stats */

static void json_address(FILE *f, const struct flow_key *key, const uint8_t *address)
{
    char text[INET6_ADDRSTRLEN];
    inet_ntop(key->version == 4 ? AF_INET : AF_INET6, address, text, sizeof text);
    fprintf(f, "\"%s\"", text);
}

static void write_stats(const char *stopped_by)
{
    if (stats_path == NULL)
        return;
    char partial[4096];
    snprintf(partial, sizeof partial, "%s.%d.tmp", stats_path, (int)getpid());
    FILE *f = fopen(partial, "w");
    if (f == NULL) {
        fprintf(stderr, "nsh-flowcount: %s: %s\n", partial, strerror(errno));
        return;
    }
    fprintf(f, "{\n  \"program\": \"nsh-flowcount\",\n");
    fprintf(f, "  \"in\": {\"packets\": %llu, \"bytes\": %llu},\n",
            (unsigned long long)counters.packets_in, (unsigned long long)counters.bytes_in);
    fprintf(f, "  \"out\": {\"packets\": %llu, \"bytes\": %llu},\n",
            (unsigned long long)counters.packets_out, (unsigned long long)counters.bytes_out);
    fprintf(f, "  \"dropped\": {");
    for (int i = 0; i < DROP_REASONS; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", drop_names[i],
                (unsigned long long)counters.drops[i]);
    fprintf(f, "},\n");
    fprintf(f, "  \"md1\": %llu, \"md2\": %llu,\n", (unsigned long long)counters.md1,
            (unsigned long long)counters.md2);
    fprintf(f, "  \"tlv\": {\"added\": %llu, \"no_room\": %llu},\n",
            (unsigned long long)counters.tlv_added, (unsigned long long)counters.tlv_no_room);
    fprintf(f, "  \"inner_not_ip\": %llu,\n", (unsigned long long)counters.inner_not_ip);
    for (int i = 0; i < 2; i++) {
        struct tpacket_stats st;
        socklen_t len = sizeof st;
        /* Reading the statistics resets them: they add up here. */
        if (packet_fds[i] >= 0
            && getsockopt(packet_fds[i], SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
            counters.socket_drops += st.tp_drops;
    }
    fprintf(f, "  \"socket_drops\": %llu,\n", (unsigned long long)counters.socket_drops);
    fprintf(f, "  \"flow_table\": {\"flows\": %zu, \"capacity\": %zu, \"overflow\": %llu},\n",
            flow_count, flow_capacity, (unsigned long long)counters.flow_overflow);
    fprintf(f, "  \"flows\": [");
    int first = 1;
    for (size_t i = 0; i < flow_slots; i++) {
        const struct flow *fl = &flows[i];
        if (!fl->used)
            continue;
        fprintf(f, "%s\n    {\"ip\": %u, \"src\": ", first ? "" : ",", fl->key.version);
        json_address(f, &fl->key, fl->key.src);
        fprintf(f, ", \"dst\": ");
        json_address(f, &fl->key, fl->key.dst);
        fprintf(f, ", \"proto\": %u, \"sport\": %u, \"dport\": %u, \"packets\": %llu, \"bytes\": %llu}",
                fl->key.proto, fl->key.sport, fl->key.dport, (unsigned long long)fl->packets,
                (unsigned long long)fl->bytes);
        first = 0;
    }
    fprintf(f, "%s]", first ? "" : "\n  ");
    if (stopped_by != NULL)
        fprintf(f, ",\n  \"stopped_by\": \"%s\"", stopped_by);
    fprintf(f, "\n}\n");
    if (fclose(f) != 0 || rename(partial, stats_path) != 0) {
        fprintf(stderr, "nsh-flowcount: %s: %s\n", stats_path, strerror(errno));
        unlink(partial);
    }
}

/* ------------------------------------------------------------------ sockets */

static int open_interface(const char *ifname)
{
    unsigned index = if_nametoindex(ifname);
    if (index == 0) {
        fprintf(stderr, "nsh-flowcount: %s: no such interface\n", ifname);
        return -1;
    }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "nsh-flowcount: %s: socket: %s\n", ifname, strerror(errno));
        return -1;
    }
    int one = 1;
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_NSH); /* only NSH frames are queued here */
    sll.sll_ifindex = (int)index;
    struct packet_mreq promisc = {0};
    promisc.mr_ifindex = (int)index;
    promisc.mr_type = PACKET_MR_PROMISC;
    /* never read back our own answers; take frames for any MAC (undone at close) */
    /* A deep queue: the default (about 208 KB) holds three GSO super-frames.
       SO_RCVBUFFORCE passes net.core.rmem_max (it needs CAP_NET_ADMIN). */
    int size = RECEIVE_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0
        || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0
        || setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &promisc, sizeof promisc) < 0) {
        fprintf(stderr, "nsh-flowcount: %s: %s\n", ifname, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int open_udp(const char *spec)
{
    char host[256] = "0.0.0.0";
    const char *port = spec;
    const char *colon = strrchr(spec, ':');
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof host) {
            fprintf(stderr, "nsh-flowcount: --udp %s: expected [IPV6]:PORT\n", spec);
            return -1;
        }
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = '\0';
        port = end + 2;
    } else if (colon != NULL) {
        if ((size_t)(colon - spec) >= sizeof host) {
            fprintf(stderr, "nsh-flowcount: --udp %s: host too long\n", spec);
            return -1;
        }
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        port = colon + 1;
    }
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "nsh-flowcount: --udp %s: %s\n", spec, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, found->ai_addr, found->ai_addrlen) < 0) {
        fprintf(stderr, "nsh-flowcount: --udp %s: %s\n", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(found);
        return -1;
    }
    freeaddrinfo(found);
    return fd;
}

static uint8_t in_buf[MAX_FRAME];
static uint8_t out_buf[MAX_FRAME + FLOW_TLV_SIZE];

static void send_failed(int err)
{
    counters.drops[DROP_SEND_ERROR]++;
    if (counters.drops[DROP_SEND_ERROR] <= 5)
        fprintf(stderr, "nsh-flowcount: send: %s\n", strerror(err));
}

/* One frame from an interface socket; the answer leaves by `out_fd`. 0: nothing was waiting. */
static int handle_ethernet(int fd, int out_fd)
{
    ssize_t n = recv(fd, in_buf, sizeof in_buf, MSG_DONTWAIT);
    if (n < 0)
        return 0;
    counters.packets_in++;
    counters.bytes_in += (uint64_t)n;
    if (n < ETH_HEADER) {
        counters.drops[DROP_TRUNCATED_ETHERNET]++;
        return 1;
    }
    if (get16(in_buf + 12) != ETH_P_NSH) {
        counters.drops[DROP_NOT_NSH]++;
        return 1;
    }
    enum drop why = DROP_TRUNCATED_NSH;
    long answer = process_nsh(in_buf + ETH_HEADER, (size_t)n - ETH_HEADER, out_buf + ETH_HEADER, &why);
    if (answer < 0) {
        counters.drops[why]++;
        return 1;
    }
    /* back to the MAC it came from, from the MAC it was sent to */
    memcpy(out_buf, in_buf + 6, 6);
    memcpy(out_buf + 6, in_buf, 6);
    memcpy(out_buf + 12, in_buf + 12, 2);
    size_t size = (size_t)answer + ETH_HEADER;
    if (send(out_fd, out_buf, size, 0) < 0) {
        send_failed(errno);
        return 1;
    }
    counters.packets_out++;
    counters.bytes_out += size;
    return 1;
}

/* One VXLAN-GPE datagram; the answer goes back to its sender. 0: nothing was waiting. */
static int handle_udp(int fd)
{
    struct sockaddr_storage from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, in_buf, sizeof in_buf, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
    if (n < 0)
        return 0;
    counters.packets_in++;
    counters.bytes_in += (uint64_t)n;
    if (n < GPE_HEADER) {
        counters.drops[DROP_TRUNCATED_VXLAN_GPE]++;
        return 1;
    }
    /* flags R R Ver I P B O (draft-ietf-nvo3-vxlan-gpe-13 §3.1) */
    if (in_buf[0] & 0x30) {
        counters.drops[DROP_VXLAN_GPE_VERSION]++;
        return 1;
    }
    if (!(in_buf[0] & 0x04) || in_buf[3] != 4) {
        counters.drops[DROP_GPE_NOT_NSH]++;
        return 1;
    }
    enum drop why = DROP_TRUNCATED_NSH;
    long answer = process_nsh(in_buf + GPE_HEADER, (size_t)n - GPE_HEADER, out_buf + GPE_HEADER, &why);
    if (answer < 0) {
        counters.drops[why]++;
        return 1;
    }
    memcpy(out_buf, in_buf, GPE_HEADER);
    size_t size = (size_t)answer + GPE_HEADER;
    if (sendto(fd, out_buf, size, 0, (struct sockaddr *)&from, from_len) < 0) {
        send_failed(errno);
        return 1;
    }
    counters.packets_out++;
    counters.bytes_out += size;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nsh-flowcount [--interface IFACE [--egress IFACE]] [--udp [HOST:]PORT]\n"
            "                     [--stats FILE] [--flows N] [--count N]\n"
            "An NSH-aware function: counts the flows of the packets it is given, adds their\n"
            "count as an MD type 2 context header (class 0xFFF6, type 0x80), sends them back\n"
            "with the service index one less. SIGUSR1 writes --stats; SIGTERM ends it.\n");
}

int main(int argc, char **argv)
{
    const char *ifname = NULL, *egress = NULL, *udp = NULL;
    unsigned long capacity = 4096, count = 0;
    static const struct option options[] = {
        {"interface", required_argument, NULL, 'i'}, {"egress", required_argument, NULL, 'e'},
        {"udp", required_argument, NULL, 'u'},       {"stats", required_argument, NULL, 's'},
        {"flows", required_argument, NULL, 'f'},     {"count", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "i:e:u:s:f:c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'i': ifname = optarg; break;
        case 'e': egress = optarg; break;
        case 'u': udp = optarg; break;
        case 's': stats_path = optarg; break;
        case 'f':
            capacity = strtoul(optarg, &end, 10);
            if (*end || capacity == 0 || capacity > (1UL << 24)) {
                fprintf(stderr, "nsh-flowcount: --flows %s: expected 1 to 16777216\n", optarg);
                return 2;
            }
            break;
        case 'c':
            count = strtoul(optarg, &end, 10);
            if (*end || count == 0) {
                fprintf(stderr, "nsh-flowcount: --count %s: expected a positive number\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || (ifname == NULL && udp == NULL) || (egress != NULL && ifname == NULL)) {
        usage(stderr);
        return 2;
    }

    flow_capacity = capacity;
    for (flow_slots = 1; flow_slots < 2 * capacity; flow_slots <<= 1)
        ;
    flows = calloc(flow_slots, sizeof *flows);
    if (flows == NULL) {
        fprintf(stderr, "nsh-flowcount: no memory for %lu flows\n", capacity);
        return 1;
    }

    /* Signals are blocked but while ppoll waits: none is lost between a check and the wait. */
    sigset_t blocked, waiting;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigprocmask(SIG_BLOCK, &blocked, &waiting);
    sigdelset(&waiting, SIGUSR1);
    sigdelset(&waiting, SIGTERM);
    sigdelset(&waiting, SIGINT);
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    struct pollfd fds[3];
    int kinds[3]; /* 0: ingress interface, 1: egress interface, 2: UDP */
    nfds_t nfds = 0;
    int in_fd = -1, out_fd = -1, udp_fd = -1;
    if (ifname != NULL) {
        in_fd = open_interface(ifname);
        if (in_fd < 0)
            return 1;
        packet_fds[0] = in_fd;
        fds[nfds] = (struct pollfd){.fd = in_fd, .events = POLLIN};
        kinds[nfds++] = 0;
        if (egress != NULL) {
            out_fd = open_interface(egress);
            if (out_fd < 0)
                return 1;
            packet_fds[1] = out_fd;
            fds[nfds] = (struct pollfd){.fd = out_fd, .events = POLLIN};
            kinds[nfds++] = 1;
        }
    }
    if (udp != NULL) {
        udp_fd = open_udp(udp);
        if (udp_fd < 0)
            return 1;
        fds[nfds] = (struct pollfd){.fd = udp_fd, .events = POLLIN};
        kinds[nfds++] = 2;
    }
    fprintf(stderr, "nsh-flowcount: ready:%s%s%s%s%s%s\n", ifname ? " NSH on " : "",
            ifname ? ifname : "", egress ? " and " : "", egress ? egress : "",
            udp ? " VXLAN-GPE on " : "", udp ? udp : "");

    const char *stopped_by = NULL;
    while (stopped_by == NULL) {
        if (stats_asked) {
            stats_asked = 0;
            write_stats(NULL);
        }
        if (stop_signal) {
            stopped_by = stop_signal == SIGTERM ? "SIGTERM" : "SIGINT";
            break;
        }
        int ready = ppoll(fds, nfds, NULL, &waiting);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "nsh-flowcount: poll: %s\n", strerror(errno));
            break;
        }
        for (nfds_t i = 0; i < nfds && stopped_by == NULL; i++) {
            if (!(fds[i].revents & (POLLIN | POLLERR)))
                continue;
            for (int n = 0; n < BATCH; n++) {
                int got;
                if (kinds[i] == 2)
                    got = handle_udp(fds[i].fd);
                else if (out_fd < 0)
                    got = handle_ethernet(fds[i].fd, fds[i].fd);
                else
                    got = handle_ethernet(fds[i].fd, kinds[i] == 0 ? out_fd : in_fd);
                if (!got)
                    break;
                if (count && counters.packets_in >= count) {
                    stopped_by = "count";
                    break;
                }
            }
        }
    }
    write_stats(stopped_by);
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0)
        close(out_fd);
    if (udp_fd >= 0)
        close(udp_fd);
    free(flows);
    return 0;
}
