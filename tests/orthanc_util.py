"""The Orthanc test machinery lives in pipelines/local_orthanc.py (the PACS benchmark uses it too)."""
from pipelines.local_orthanc import (enter_private_netns, find_dicomweb_plugin, free_port, log_tail,  # noqa: F401
                                     loopback_up, start_orthanc, stop, wait_for_http)
