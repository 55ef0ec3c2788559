/* The ceiling for a TAP echo path: a C loop that answers UDP echo straight off a TAP device.
 *
 * Attaches to an existing TAP (IFF_TAP | IFF_NO_PI; the benchmark creates it with
 * `ip tuntap add` and gives its host side an address), then for every frame read:
 *   - an ARP request for --ip: answer it with --mac;
 *   - an IPv4 UDP datagram to --ip:--port: swap the MACs, IP addresses and ports and write it
 *     back (swapping leaves both checksums valid, so nothing is recomputed);
 *   - anything else: ignored.
 * One blocking read and one write per frame, no batching: what a minimal C reflector costs.
 *
 *   tap_reflector --tap NAME [--ip 10.0.0.2] [--mac 02:00:00:00:00:02] [--port 1235]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define ETH_LEN 14
#define ARP_LEN 28
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_ARP 0x0806
#define PROTO_UDP 17

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int attach(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    return fd;
}

static void swap(uint8_t *a, uint8_t *b, size_t n) {
    uint8_t t[6];
    memcpy(t, a, n);
    memcpy(a, b, n);
    memcpy(b, t, n);
}

/* Turn an ARP request for our address into its reply in place; 0 if it is not one. */
static int arp_reply(uint8_t *f, ssize_t n, const uint8_t mac[6], const uint8_t ip[4]) {
    uint8_t *a = f + ETH_LEN;
    if (n < ETH_LEN + ARP_LEN || a[6] != 0 || a[7] != 1 || memcmp(a + 24, ip, 4)) return 0;
    memcpy(f, f + 6, 6);
    memcpy(f + 6, mac, 6);
    a[7] = 2;
    memcpy(a + 18, a + 8, 10);  /* target (hw, ip) = sender's */
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, ip, 4);
    return 1;
}

/* Turn a UDP datagram to ip:port into its echo in place; 0 if it is not one. */
static int udp_echo(uint8_t *f, ssize_t n, const uint8_t mac[6], const uint8_t ip[4], uint16_t port) {
    uint8_t *h = f + ETH_LEN;
    if (n < ETH_LEN + 20 || (h[0] >> 4) != 4 || h[9] != PROTO_UDP || memcmp(h + 16, ip, 4)) return 0;
    size_t ihl = (size_t)(h[0] & 15) * 4;
    uint8_t *u = h + ihl;
    if ((ssize_t)(ETH_LEN + ihl + 8) > n || ((u[2] << 8) | u[3]) != port) return 0;
    memcpy(f, f + 6, 6);
    memcpy(f + 6, mac, 6);
    swap(h + 12, h + 16, 4);
    swap(u, u + 2, 2);
    return 1;
}

int main(int argc, char **argv) {
    const char *tap = NULL, *ip_s = "10.0.0.2", *mac_s = "02:00:00:00:00:02";
    int port = 1235;
    static struct option longs[] = {{"tap", 1, 0, 't'}, {"ip", 1, 0, 'i'}, {"mac", 1, 0, 'm'},
                                    {"port", 1, 0, 'p'}, {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        switch (c) {
        case 't': tap = optarg; break;
        case 'i': ip_s = optarg; break;
        case 'm': mac_s = optarg; break;
        case 'p': port = atoi(optarg); break;
        default: fprintf(stderr, "usage: tap_reflector --tap NAME [--ip A] [--mac M] [--port P]\n"); return 2;
        }
    }
    uint8_t ip[4], mac[6];
    if (!tap || inet_pton(AF_INET, ip_s, ip) != 1 ||
        sscanf(mac_s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "tap_reflector: need --tap, a valid --ip and --mac\n");
        return 2;
    }
    int fd = attach(tap);
    printf("tap_reflector: answering %s:%d on %s\n", ip_s, port, tap);
    fflush(stdout);
    uint8_t frame[2048];
    for (;;) {
        ssize_t n = read(fd, frame, sizeof frame);
        if (n < ETH_LEN) {
            if (n < 0) die("read");
            continue;
        }
        uint16_t type = (uint16_t)((frame[12] << 8) | frame[13]);
        int answer = type == ETHERTYPE_ARP ? arp_reply(frame, n, mac, ip)
                   : type == ETHERTYPE_IP ? udp_echo(frame, n, mac, ip, (uint16_t)port) : 0;
        if (answer && write(fd, frame, (size_t)n) != n) perror("write");
    }
}
