# The apipool proxy's container image: a static binary on an empty base
# (scratch), with CA certificates, run as a user that is not root.
#
#   docker build -t apipool:devel .          # or: podman build / buildah build
#   docker run --rm -p 8080:8080 -p 9090:9090 -v /srv/apipool:/etc/apipool:ro \
#     -e APIPOOL_TOKEN apipool:devel       # /srv/apipool holds apipool.yaml and key files
#
# The config file is /etc/apipool/apipool.yaml (CMD); it must listen on
# all interfaces for the ports to be reached: listen: ':8080',
# admin: {listen: ':9090'}. See cmd/apipool/README.md, "Container image".
#
# make image builds the same image without a container engine
# (deploy/image); deploy/test checks that the two agree.
#
# GO_VERSION follows go.mod's go line (deploy/test checks it); the build
# stage's image is pinned by version, the final one is scratch: nothing in
# it but what is copied below.
ARG GO_VERSION=1.26.8

FROM --platform=${BUILDPLATFORM} golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Set by BuildKit and buildah for the platform built (--platform); empty,
# Go builds for the build machine's.
ARG TARGETOS
ARG TARGETARCH
# Static: CGO_ENABLED=0 (the SQLite driver, modernc.org/sqlite, is pure Go);
# timetzdata embeds the time zone database (quota days, a time zone's
# midnight) in the binary. No VCS stamp: .git is not in the build context,
# so `apipool version` says (devel); pass the version in the image labels.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags timetzdata -ldflags='-s -w' -o /out/apipool ./cmd/apipool
# The directories the image holds, owned by the user it runs as:
# /var/lib/apipool (the working directory: a SQLite database or a
# ClickHouse spill directory goes there, on a volume) and /tmp.
RUN mkdir -p /rootfs/etc/apipool /rootfs/var/lib/apipool /rootfs/tmp \
 && chown 65532:65532 /rootfs/var/lib/apipool \
 && chmod 1777 /rootfs/tmp \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/apipool:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group

FROM scratch
ARG VERSION=devel
ARG REVISION=unknown
LABEL org.opencontainers.image.title="apipool" \
      org.opencontainers.image.description="A key-pooling reverse proxy for HTTP APIs" \
      org.opencontainers.image.source="https://github.com/apipool-ng/apipool" \
      org.opencontainers.image.documentation="https://github.com/apipool-ng/apipool/tree/main/cmd/apipool" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /rootfs/ /
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/apipool /usr/local/bin/apipool
ENV PATH=/usr/local/bin
WORKDIR /var/lib/apipool
USER 65532:65532
# The proxy (listen) and the admin endpoints (admin.listen: /healthz,
# /readyz, /metrics, the dashboard, the admin API).
EXPOSE 8080 9090
ENTRYPOINT ["apipool"]
CMD ["serve", "-config", "/etc/apipool/apipool.yaml"]
