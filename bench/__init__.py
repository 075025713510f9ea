"""`make bench`: deskbridge's throughput and latency, measured against the limits of its own parts."""
