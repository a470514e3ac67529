"""What every job stands on: files that survive faults, checkpoints, workdir locks,
devices and hosts, provenance."""
