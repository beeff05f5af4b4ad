"""agent: runs on each managed host or guest VM; runs what it is sent and reports back."""
