// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// pktchain's kernel fast path: the node's fused entries (fastpath.py) in a
// hash map, applied at tc ingress of the node end of a host's veth pair.
//
// A frame whose flow has an entry for its ingress device, and that passes
// every check the Python fast path makes before it takes an entry, is
// rewritten here (MACs, TTL / hop limit, addresses, ports or ICMP identifier,
// checksums by the entry's precomputed one's complement deltas) and moved
// with bpf_redirect_peer() straight into the host at the other end of the
// egress veth.  Every other frame is returned untouched (TC_ACT_OK): the
// node's slow path reads it.  The punt rules are fastpath.py's, plus the
// layouts this program does not parse (VLAN tags, IPv4 options, IPv6
// extension headers); docs/kernel-fastpath.md lists them.
//
// The map's key and value layouts are declared again, field for field, in
// pktchain.node.dataplane.kfastpath (FP_KEY, FP_VALUE); keep the two equal.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FP_MAX_ENTRIES 65536

// What an entry matches besides its key, and what it rewrites (fp_value.flags).
#define FP_CHECK_SRC_MAC 0x0001 // a secured port: only from the first packet's MAC
#define FP_DF 0x0002            // only IPv4 packets with DF set (RFC 791 §3.1)
#define FP_SET_ADDRS 0x0004     // write new_addrs (source and destination)
#define FP_SET_PORTS 0x0008     // write new_ports (TCP/UDP ports, or ICMP identifier)
#define FP_L4_CSUM 0x0010       // update the L4 checksum at l4 + l4_csum_at
#define FP_UDP 0x0020           // UDP: a zero checksum means none (RFC 768)
#define FP_IDENTITY 0x0040      // nothing to rewrite: the frame leaves as it came

#define PUNT_TCP_FLAGS 0x07 // FIN | SYN | RST (RFC 9293 §3.1)

#define ETH_LEN 14
#define IPV4_LEN 20
#define IPV6_LEN 40
#define TCP_LEN 20
#define UDP_LEN 8
#define ICMP_LEN 8 // ICMP and ICMPv6 echo: type, code, checksum, identifier, sequence

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58

// The IPv6 headers after which parse_frame walks on (RFC 8200 §4.1): this
// program punts them instead.
#define NH_HOPOPT 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_NONE 59
#define NH_DSTOPTS 60

struct fp_key {
	__u32 ifindex; // the ingress device (the node end of a host's veth)
	__u8 version;  // 4 or 6
	__u8 proto;
	__be16 sport; // TCP/UDP source port; ICMP/ICMPv6 echo identifier; else 0
	__be16 dport; // TCP/UDP destination port; the echo identifier again; else 0
	__u16 pad;
	__u8 src[16]; // IPv4: the first 4 bytes, the rest zero
	__u8 dst[16];
};

struct fp_value {
	__u8 dst_mac[6]; // the destination MAC of the packets the entry is for
	__u8 src_mac[6]; // with FP_CHECK_SRC_MAC: the only source MAC taken
	__u8 macs[12];   // new destination and source MAC
	__u32 egress;    // the ifindex whose peer the packet goes into
	__u16 flags;
	__u8 ttl;        // subtracted from the TTL / hop limit; a packet must have more
	__u8 l4_csum_at; // where the L4 checksum is, from the L4 header
	__u32 mtu;       // 0: none; else the largest IP packet (GSO: segment) taken
	__u16 ip_delta;  // IPv4 header checksum delta (TTL word and addresses)
	__u16 addr_delta; // L4 checksum delta of the addresses (pseudo-header)
	__u16 port_delta; // L4 checksum delta of the ports or identifier
	__u8 ports_at;    // where new_ports go, from the L4 header (0, or 4 for ICMP)
	__u8 ports_len;   // 4, or 2 for ICMP
	__u8 new_addrs[32]; // IPv4: source and destination in the first 8 bytes
	__u8 new_ports[4];
	__u64 packets; // counted here; the node reads them back as deltas
	__u64 bytes;
	__u64 seen_ns; // bpf_ktime_get_ns() of the last packet
};

_Static_assert(sizeof(struct fp_key) == 44, "fp_key is 44 bytes (kfastpath.FP_KEY)");
_Static_assert(sizeof(struct fp_value) == 104, "fp_value is 104 bytes (kfastpath.FP_VALUE)");
_Static_assert(__builtin_offsetof(struct fp_value, packets) == 80, "counters at 80");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_ENTRIES);
	__type(key, struct fp_key);
	__type(value, struct fp_value);
} fp_entries SEC(".maps");

// When `enabled` is set, the egress of the last redirected packet: what a
// test run (BPF_PROG_TEST_RUN, which does not perform the redirect) reads back.
struct fp_trace {
	__u32 enabled;
	__u32 egress;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_trace);
} fp_trace SEC(".maps");

// The node's slow path of each ingress device: the ifindex of a TAP in the
// node's namespace to which every frame this program does not carry is
// redirected (its egress: the node reads it from the TAP's descriptor, with
// the virtio-net header that keeps GSO and partial checksums, and with any
// VLAN tag in the frame).  A device missing here has its punted frames
// returned with TC_ACT_OK (test runs; the equivalence tests).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   // the ingress ifindex
	__type(value, __u32); // the TAP's ifindex
} fp_punt SEC(".maps");

static __always_inline int punt(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;
	__u32 *tap = bpf_map_lookup_elem(&fp_punt, &ifindex);
	if (tap)
		return bpf_redirect(*tap, 0);
	return TC_ACT_OK;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

// Constant sizes only: clang then copies with plain loads and stores.
#define copy_bytes(to, from, len) __builtin_memcpy((to), (from), (len))

SEC("tc")
int pktchain_fastpath(struct __sk_buff *skb)
{
	// Every header this program reads or writes is within the first 54 + 20
	// bytes (Ethernet, IPv6, TCP): make them linear when they are not.
	__u32 need = ETH_LEN + IPV6_LEN + TCP_LEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + need > data_end && skb->len > data_end - data) {
		if (bpf_skb_pull_data(skb, skb->len < need ? skb->len : need))
			return punt(skb);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (skb->vlan_present)
		return punt(skb);
	if (data + ETH_LEN > data_end)
		return punt(skb);
	__u8 *eth = data;
	__u16 ethertype = bpf_ntohs(*(__be16 *)(eth + 12));

	struct fp_key key = {};
	key.ifindex = skb->ingress_ifindex;
	__u32 l3 = ETH_LEN;
	__u32 l4, end, payload;
	__u8 *ip = data + ETH_LEN;
	__u32 frame_len = skb->len;

	if (ethertype == ETH_P_IP) {
		if ((void *)ip + IPV4_LEN > data_end)
			return punt(skb);
		if (ip[0] != 0x45) // version 4 without options
			return punt(skb);
		__u32 total = ((__u32)ip[2] << 8) | ip[3];
		if (total < IPV4_LEN || total > frame_len - l3)
			return punt(skb);
		if ((ip[6] & 0x3f) || ip[7]) // MF or a fragment offset
			return punt(skb);
		key.version = 4;
		key.proto = ip[9];
		copy_bytes(key.src, ip + 12, 4);
		copy_bytes(key.dst, ip + 16, 4);
		l4 = l3 + IPV4_LEN;
		end = l3 + total;
	} else if (ethertype == ETH_P_IPV6) {
		if ((void *)ip + IPV6_LEN > data_end)
			return punt(skb);
		if ((ip[0] >> 4) != 6)
			return punt(skb);
		__u32 plen = ((__u32)ip[4] << 8) | ip[5];
		if (l3 + IPV6_LEN + plen > frame_len)
			return punt(skb);
		__u8 next = ip[6];
		if (next == NH_HOPOPT || next == NH_ROUTING || next == NH_FRAGMENT ||
		    next == NH_NONE || next == NH_DSTOPTS)
			return punt(skb);
		key.version = 6;
		key.proto = next;
		copy_bytes(key.src, ip + 8, 16);
		copy_bytes(key.dst, ip + 24, 16);
		l4 = l3 + IPV6_LEN;
		end = l4 + plen;
	} else {
		return punt(skb);
	}

	// The L4 header as parse_frame checks it; a packet it would call
	// malformed never takes an entry.
	__u8 *th = data + l4;
	__u32 available = end - l4;
	payload = l4;
	if (key.proto == PROTO_TCP) {
		if (available < TCP_LEN || (void *)th + TCP_LEN > data_end)
			return punt(skb);
		__u32 header = (th[12] >> 4) * 4;
		if (header < TCP_LEN || header > available)
			return punt(skb);
		if (th[13] & PUNT_TCP_FLAGS)
			return punt(skb);
		key.sport = *(__be16 *)th;
		key.dport = *(__be16 *)(th + 2);
		payload = l4 + header;
	} else if (key.proto == PROTO_UDP) {
		if (available < UDP_LEN || (void *)th + UDP_LEN > data_end)
			return punt(skb);
		__u32 length = ((__u32)th[4] << 8) | th[5];
		if (length < UDP_LEN || length > available)
			return punt(skb);
		key.sport = *(__be16 *)th;
		key.dport = *(__be16 *)(th + 2);
		payload = l4 + UDP_LEN;
	} else if ((key.proto == PROTO_ICMP && key.version == 4) ||
		   (key.proto == PROTO_ICMPV6 && key.version == 6)) {
		if (available < ICMP_LEN || (void *)th + ICMP_LEN > data_end)
			return punt(skb);
		__u8 type = th[0];
		int echo = key.version == 4 ? (type == 8 || type == 0) : (type == 128 || type == 129);
		if (echo) {
			key.sport = *(__be16 *)(th + 4);
			key.dport = key.sport;
		}
		payload = l4 + ICMP_LEN;
	}

	struct fp_value *entry = bpf_map_lookup_elem(&fp_entries, &key);
	if (!entry)
		return punt(skb);

	// The checks fastpath.py makes before a packet takes its entry.
	if (!mac_equal(eth, entry->dst_mac))
		return punt(skb);
	if ((entry->flags & FP_CHECK_SRC_MAC) && !mac_equal(eth + 6, entry->src_mac))
		return punt(skb);
	__u8 ttl = key.version == 4 ? ip[8] : ip[7];
	if (entry->ttl && ttl <= entry->ttl)
		return punt(skb);
	if ((entry->flags & FP_DF) && !(ip[6] & 0x40))
		return punt(skb);
	if (entry->mtu) {
		// The IP packet's size or, for a GSO packet, that of each segment.
		__u32 size = skb->gso_size ? payload - l3 + skb->gso_size : end - l3;
		if (size > entry->mtu)
			return punt(skb);
	}

	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, frame_len);
	entry->seen_ns = bpf_ktime_get_ns();

	__u32 egress = entry->egress;
	if (entry->flags & FP_IDENTITY)
		goto redirect;

	// The rewrite: fields first (direct writes), then the checksums (helpers,
	// which keep CHECKSUM_PARTIAL and CHECKSUM_COMPLETE packets right).
	copy_bytes(eth, entry->macs, 12);
	if (entry->ttl) {
		if (key.version == 4)
			ip[8] = ttl - entry->ttl;
		else
			ip[7] = ttl - entry->ttl;
	}
	if (entry->flags & FP_SET_ADDRS) {
		// (The bounds were checked above; the verifier wants them again here.)
		if (key.version == 4) {
			if ((void *)ip + IPV4_LEN > data_end)
				return TC_ACT_SHOT;
			copy_bytes(ip + 12, entry->new_addrs, 8);
		} else {
			if ((void *)ip + IPV6_LEN > data_end)
				return TC_ACT_SHOT;
			copy_bytes(ip + 8, entry->new_addrs, 32);
		}
	}
	if (entry->flags & FP_SET_PORTS) {
		if (entry->ports_at == 0) {
			if ((void *)th + 4 > data_end)
				return TC_ACT_SHOT;
			copy_bytes(th, entry->new_ports, 4);
		} else {
			if ((void *)th + 6 > data_end)
				return TC_ACT_SHOT;
			copy_bytes(th + 4, entry->new_ports, 2);
		}
	}
	__u16 flags = entry->flags;
	__u16 ip_delta = entry->ip_delta;
	__u16 addr_delta = entry->addr_delta;
	__u16 port_delta = entry->port_delta;
	__u32 csum_at = l4 + entry->l4_csum_at;

	if (ip_delta && bpf_l3_csum_replace(skb, l3 + 10, 0, ip_delta, 0))
		return TC_ACT_SHOT;
	if (flags & FP_L4_CSUM) {
		__u64 mangled = (flags & FP_UDP) ? BPF_F_MARK_MANGLED_0 : 0;
		// The two shares of fastpath.py's l4_delta: the addresses' (also
		// in a CHECKSUM_PARTIAL packet's seed) and the rest (ports, or the
		// whole of it for ICMP), which is applied even when it is one's
		// complement zero (0xffff), as Python applies its one delta.
		if (addr_delta &&
		    bpf_l4_csum_replace(skb, csum_at, 0, addr_delta, BPF_F_PSEUDO_HDR | mangled))
			return TC_ACT_SHOT;
		if (port_delta && bpf_l4_csum_replace(skb, csum_at, 0, port_delta, mangled))
			return TC_ACT_SHOT;
	}

redirect:;
	__u32 zero = 0;
	struct fp_trace *trace = bpf_map_lookup_elem(&fp_trace, &zero);
	if (trace && trace->enabled)
		trace->egress = egress;
	return bpf_redirect_peer(egress, 0);
}

char LICENSE[] SEC("license") = "GPL";
