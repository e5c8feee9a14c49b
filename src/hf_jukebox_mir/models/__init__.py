"""The Hub-facing wing: the modules copied beside the weights (`auto_map` remote code).

Every file here may import only its siblings (`from .x import y`, one level) and installed libraries, never
`hf_jukebox_mir`: a user loading a converted folder with `trust_remote_code=True` has these files and nothing
else. File names are part of the saved folders' `auto_map` contract and never change. See ARCHITECTURE.md.
"""
