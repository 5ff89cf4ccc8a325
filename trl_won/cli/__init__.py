"""The `trl-won` command line: `trl-won rrhf | west-of-n | label | demo`."""
