"""Boot-storm simulator pieces for benchmarks/bootstorm.py (topology, cluster, plan, load generator,
stacks, server views, report); reusable for multi-host scale-out runs."""
