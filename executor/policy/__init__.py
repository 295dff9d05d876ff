"""Pure decisions (no I/O): schedule, packing, scaling, retrying, pools."""
