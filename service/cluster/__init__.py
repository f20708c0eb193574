"""Sharing the router's state between the hosts of a cluster, through Redis (`state:` in the
config): rate-limit budget drawn in slices, health news passed on, all off the request path."""

from service.cluster.link import ClusterLink

__all__ = ["ClusterLink"]
