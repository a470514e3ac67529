"""Python configs (``ml_collections``): ``get_config(arg)`` with named presets."""
