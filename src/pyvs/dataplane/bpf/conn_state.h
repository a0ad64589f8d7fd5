/* IPVS's TCP state tables (ip_vs_proto_tcp.c): input-only for DR connections (the director sees the client's
 * packets only); for NAT connections, whose replies come back through the director, the input table for the
 * client's packets and the output table for the real's. Rows: packet kind; columns: current state. */
#ifndef PYVS_CONN_STATE_H
#define PYVS_CONN_STATE_H

#include "pyvs_abi.h"

enum { EV_SYN, EV_FIN, EV_ACK, EV_RST, EV_COUNT };

#define sNO PYVS_STATE_NONE
#define sES PYVS_STATE_ESTABLISHED
#define sSS PYVS_STATE_SYN_SENT
#define sSR PYVS_STATE_SYN_RECV
#define sFW PYVS_STATE_FIN_WAIT
#define sTW PYVS_STATE_TIME_WAIT
#define sCL PYVS_STATE_CLOSE
#define sCW PYVS_STATE_CLOSE_WAIT
#define sLA PYVS_STATE_LAST_ACK
#define sLI PYVS_STATE_LISTEN
#define sSA PYVS_STATE_SYNACK

/*                     sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
static const __u8 tcp_input_only[EV_COUNT][PYVS_STATE_SYNACK + 1] = {
	[EV_SYN] = {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
	[EV_FIN] = {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
	[EV_ACK] = {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
	[EV_RST] = {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
};

/* NAT (ip_vs_proto_tcp.c's INPUT and OUTPUT blocks; an ACK from NONE is ESTABLISHED as in the table above, for
 * sloppy_tcp). */
static const __u8 tcp_input[EV_COUNT][PYVS_STATE_SYNACK + 1] = {
	[EV_SYN] = {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
	[EV_FIN] = {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
	[EV_ACK] = {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
	[EV_RST] = {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
};

static const __u8 tcp_output[EV_COUNT][PYVS_STATE_SYNACK + 1] = {
	[EV_SYN] = {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
	[EV_FIN] = {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
	[EV_ACK] = {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
	[EV_RST] = {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
};

/* IPVS looks at RST, then SYN, then FIN, then ACK. */
static __always_inline int tcp_event(__u8 flags)
{
	if (flags & 0x04)
		return EV_RST;
	if (flags & 0x02)
		return EV_SYN;
	if (flags & 0x01)
		return EV_FIN;
	return EV_ACK;
}

static __always_inline __u8 tcp_next_state(__u8 state, int event)
{
	if (state > PYVS_STATE_SYNACK || event >= EV_COUNT)
		return PYVS_STATE_CLOSE;
	return tcp_input_only[event][state];
}

/* The next state of a connection with its entry's flags: a NAT connection's client packets take the input table. */
static __always_inline __u8 tcp_next_state_for(__u8 state, int event, __u8 conn_flags)
{
	if (!(conn_flags & PYVS_CONN_F_MASQ))
		return tcp_next_state(state, event);
	if (state > PYVS_STATE_SYNACK || event >= EV_COUNT)
		return PYVS_STATE_CLOSE;
	return tcp_input[event][state];
}

/* A NAT connection's reply (the real's packet). */
static __always_inline __u8 tcp_next_state_output(__u8 state, int event)
{
	if (state > PYVS_STATE_SYNACK || event >= EV_COUNT)
		return PYVS_STATE_CLOSE;
	return tcp_output[event][state];
}

#endif
