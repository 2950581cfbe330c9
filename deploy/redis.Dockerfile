# syntax=docker/dockerfile:1
# A Redis image from Debian's `redis-server` package, for the chart's in-chart Redis
# (`feedback.redis.enabled`) on clusters that cannot pull docker.io/library/redis:
#
#   docker build -f deploy/redis.Dockerfile -t registry.example/redis:7-debian deploy
#   helm install … --set feedback.redis.enabled=true \
#     --set feedback.redis.image.repository=registry.example/redis,feedback.redis.image.tag=7-debian
#
# The tests build it with podman on the same debootstrap base as the ferry image
# (`scripts/kube-cluster.sh redis-image`) and run it on the one-node cluster (tests/cluster/).
# It runs as uid 999 like the official image (the chart's feedback.redis.runAsUser); the chart
# gives the whole configuration on the command line.

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# policy-rc.d: the package's postinst must not start a server inside the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
    && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && install -d -o 999 -g 999 -m 0750 /data
USER 999:999
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
