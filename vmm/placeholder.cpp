// VM lifecycle, vCPUs, guest RAM and config land here.
