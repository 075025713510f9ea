"""Fault injection: `make faults` kills and restarts the parts under load and checks nothing is lost."""
