# tincan in a container: a static binary on a minimal base, run as a
# non-root user, its bbolt file in the /data volume.
#
#   docker build -t tincan .
#   docker run -d --name tincan --network host -v tincan-data:/data \
#     --env-file /etc/tincan/env tincan -turn-public-ip 203.0.113.7
#
# Ports: 8080/tcp (HTTP), 3478/udp and 3478/tcp (STUN/TURN), and the TURN
# relay range 49152-65535/udp (-turn-relay-ports). Publishing a range that
# wide with -p is slow (a rule per port): use --network host, or narrow
# the range (-turn-relay-ports 49152-49407) and publish just that. Behind
# Docker's NAT, set -turn-public-ip to the host's public address: the
# default would be the container's own.
#
# contract_packaging_test.go reads this file: it checks the instructions
# below and builds the binary with the same environment and flags.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "/out/tincan", "."]
# The volume's mount point, owned by the user that writes the db.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tincan /usr/local/bin/tincan
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME /data
# The environment twin of -db: it holds whatever flags are given to run.
ENV TINCAN_DB=/data/tincan.db
EXPOSE 8080/tcp 3478/udp 3478/tcp 49152-65535/udp
ENTRYPOINT ["/usr/local/bin/tincan"]
