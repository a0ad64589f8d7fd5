/* SCTP services (ipvsadm --sctp-service): IPVS's SCTP state table for input-only (DR) connections
 * (ip_vs_proto_sctp.c, sctp_states[IP_VS_DIR_INPUT_ONLY]) and the event of a packet, read from its first chunk.
 * The director sees the client's packets only; DR changes no byte of the packet, so its CRC32c stays right. */
#ifndef PYVS_SCTP_H
#define PYVS_SCTP_H

#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "pyvs_abi.h"
#include "conn_state.h"

/* The common header, then the first chunk's header (RFC 9260, 3.1 and 3.2). */
struct sctp_head {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__le32 checksum;
	__u8 type;   /* the first chunk */
	__u8 flags;
	__be16 length;
};

/* IPVS's events (enum ipvs_sctp_event_t). */
enum { SEV_DATA, SEV_INIT, SEV_INIT_ACK, SEV_COOKIE_ECHO, SEV_COOKIE_ACK, SEV_SHUTDOWN, SEV_SHUTDOWN_ACK,
       SEV_SHUTDOWN_COMPLETE, SEV_ERROR, SEV_ABORT, SEV_COUNT };

#define SCTP_CID_INIT 1
#define SCTP_CID_INIT_ACK 2
#define SCTP_CID_ABORT 6
#define SCTP_CID_SHUTDOWN 7
#define SCTP_CID_SHUTDOWN_ACK 8
#define SCTP_CID_ERROR 9
#define SCTP_CID_COOKIE_ECHO 10
#define SCTP_CID_COOKIE_ACK 11
#define SCTP_CID_SHUTDOWN_COMPLETE 14
#define SCTP_CHUNK_MAX 2048 /* a COOKIE ECHO longer than this is not looked past for a bundled ABORT */

static __always_inline __u8 sctp_chunk_event(__u8 type)
{
	switch (type) {
	case SCTP_CID_INIT: return SEV_INIT;
	case SCTP_CID_INIT_ACK: return SEV_INIT_ACK;
	case SCTP_CID_ABORT: return SEV_ABORT;
	case SCTP_CID_SHUTDOWN: return SEV_SHUTDOWN;
	case SCTP_CID_SHUTDOWN_ACK: return SEV_SHUTDOWN_ACK;
	case SCTP_CID_ERROR: return SEV_ERROR;
	case SCTP_CID_COOKIE_ECHO: return SEV_COOKIE_ECHO;
	case SCTP_CID_COOKIE_ACK: return SEV_COOKIE_ACK;
	case SCTP_CID_SHUTDOWN_COMPLETE: return SEV_SHUTDOWN_COMPLETE;
	default: return SEV_DATA; /* DATA, SACK, HEARTBEAT(-ACK), ECNE, CWR and every other chunk */
	}
}

/* The event of a packet: its first chunk's, except that an ABORT bundled after a COOKIE ECHO or COOKIE ACK
 * counts (set_sctp_state). */
static __always_inline __u8 sctp_packet_event(const struct sctp_head *sh, void *data_end)
{
	__u8 type = sh->type;
	__u32 len, off;
	__u8 *next;

	if (type == SCTP_CID_COOKIE_ECHO || type == SCTP_CID_COOKIE_ACK) {
		len = bpf_ntohs(sh->length);
		if (len >= 4 && len <= SCTP_CHUNK_MAX) {
			off = (len + 3) & ~3U;
			asm volatile("" : "+r"(off)); /* masked here, so that the verifier sees the bound (cf. ip6_bounded) */
			off &= 0xffc;
			next = (__u8 *)&sh->type + off;
			if ((void *)(next + 1) <= data_end && *next == SCTP_CID_ABORT)
				type = SCTP_CID_ABORT;
		}
	}
	return sctp_chunk_event(type);
}

#define S(state) PYVS_STATE_SCTP_##state
#define sNO_ S(NONE)
#define sI1_ S(INIT1)
#define sIN_ S(INIT)
#define sCS_ S(COOKIE_SENT)
#define sCR_ S(COOKIE_REPLIED)
#define sCW_ S(COOKIE_WAIT)
#define sCO_ S(COOKIE)
#define sCE_ S(COOKIE_ECHOED)
#define sES_ S(ESTABLISHED)
#define sSS_ S(SHUTDOWN_SENT)
#define sSR_ S(SHUTDOWN_RECEIVED)
#define sSA_ S(SHUTDOWN_ACK_SENT)
#define sRJ_ S(REJECTED)
#define sCL_ S(CLOSED)
#define PYVS_SCTP_STATES (PYVS_STATE_SCTP_CLOSED - PYVS_STATE_SCTP_NONE + 1)

/* sctp_states[IP_VS_DIR_INPUT_ONLY]: rows the event, columns the current state (from SCTP_NONE on). */
static const __u8 sctp_input_only[SEV_COUNT][PYVS_SCTP_STATES] = {
/*                      sNO   sI1   sIN   sCS   sCR   sCW   sCO   sCE   sES   sSS   sSR   sSA   sRJ   sCL */
	[SEV_DATA] =          {sES_, sI1_, sIN_, sCS_, sCR_, sES_, sCO_, sCE_, sES_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_INIT] =          {sI1_, sIN_, sIN_, sIN_, sIN_, sIN_, sCO_, sCE_, sES_, sSS_, sSR_, sSA_, sIN_, sIN_},
	[SEV_INIT_ACK] =      {sCE_, sCE_, sCE_, sCE_, sCE_, sCE_, sCO_, sCE_, sES_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_COOKIE_ECHO] =   {sES_, sES_, sES_, sES_, sES_, sES_, sCO_, sCE_, sES_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_COOKIE_ACK] =    {sES_, sI1_, sIN_, sES_, sES_, sCW_, sES_, sES_, sES_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_SHUTDOWN] =      {sSR_, sI1_, sIN_, sCS_, sCR_, sCW_, sCO_, sCE_, sSR_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_SHUTDOWN_ACK] =  {sCL_, sIN_, sIN_, sCS_, sCR_, sCW_, sCO_, sCE_, sCL_, sCL_, sSR_, sCL_, sRJ_, sCL_},
	[SEV_SHUTDOWN_COMPLETE] = {sCL_, sCL_, sCL_, sCL_, sCL_, sCW_, sCO_, sCE_, sES_, sSS_, sCL_, sCL_, sRJ_, sCL_},
	[SEV_ERROR] =         {sCL_, sI1_, sIN_, sCS_, sCR_, sCW_, sCO_, sCE_, sES_, sSS_, sSR_, sSA_, sRJ_, sCL_},
	[SEV_ABORT] =         {sCL_, sCL_, sCL_, sCL_, sCL_, sRJ_, sCL_, sCL_, sCL_, sCL_, sCL_, sCL_, sCL_, sCL_},
};

static __always_inline __u8 sctp_next_state(__u8 state, __u8 event)
{
	__u32 column = state - PYVS_STATE_SCTP_NONE;

	if (state < PYVS_STATE_SCTP_NONE || column >= PYVS_SCTP_STATES || event >= SEV_COUNT)
		return PYVS_STATE_SCTP_CLOSED;
	return sctp_input_only[event][column];
}

/* The event conn_path's miss rules see (TCP's): an INIT starts a connection as a SYN does, an ABORT is left to the
 * kernel as an RST is, everything else is a packet of an association the director does not know. */
static __always_inline int sctp_miss_event(__u8 event)
{
	return event == SEV_INIT ? EV_SYN : event == SEV_ABORT ? EV_RST : EV_ACK;
}

/* An INIT on a closed or rejected association starts a new one (IPVS's is_new_conn_expected). */
static __always_inline int sctp_reopens(__u8 state, int event)
{
	return event == EV_SYN && (state == PYVS_STATE_SCTP_CLOSED || state == PYVS_STATE_SCTP_REJECTED);
}

#endif
