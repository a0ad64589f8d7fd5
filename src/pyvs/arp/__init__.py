"""ARP, the heart of DR: frames and raw sockets, the doctor's wire checks, the ARP guard, VIP takeover."""
