/* IPVS's TCP state table for input-only (DR) connections: the director sees
 * the client's packets only. Rows: packet kind; columns: current state. */
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

#endif
