"""Preference sync (use case 6): what changed in opt-ins, devices and stated preferences → one row per customer
for Exstream, which decides the channel of the next communication from it."""
