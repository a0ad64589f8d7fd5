/* The maps of ipvsadm's thresholds and rate estimator (ipvsadm -x -y, -L --rate); see adm.h. */
#ifndef PYVS_ADM_MAPS_H
#define PYVS_ADM_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"

/* Real slot -> its connection thresholds (written by the control plane with the real). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_real_limits);
} real_limits SEC(".maps");

/* The index of `stats` (service slot, then PYVS_MAX_SERVICES + real slot) -> its rate estimator. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES + PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_est);
} estimators SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pyvs_est_clock);
} est_clock SEC(".maps");

#endif
