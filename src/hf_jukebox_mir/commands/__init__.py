"""Sub-commands of the `jukebox-mir` CLI (one module each, see `hf_jukebox_mir.cli`)."""
