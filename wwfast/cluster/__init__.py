"""Scale-out beyond one server: cache placement, shared state in etcd (docs/deployment.md)."""
