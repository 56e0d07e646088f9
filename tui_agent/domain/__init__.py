"""Value types and pure rules: no I/O, no framework imports."""
