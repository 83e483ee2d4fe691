# fluxwarden: the production image, one definition for every way it is built.
#   make image       image/build.py runs this file's instructions on a debootstrap of the same
#                    Debian release (no registry, no engine) and writes an OCI archive that
#                    `ctr images import` / `docker load` take; the node e2e tests run that archive.
#   docker build -t ghcr.io/fluxwarden/fluxwarden:0.1.0 .
# The packages, the venv and the user come from image/install.sh in both cases.
FROM debian:bookworm-slim
COPY pyproject.toml setup.py README.md /src/
COPY webhook /src/webhook
COPY policies /src/policies
COPY image/install.sh /build/install.sh
COPY policies/flux-best-practices.yaml /etc/fluxwarden/policies/flux-best-practices.yaml
RUN sh /build/install.sh /src && rm -rf /src /build
ENV PATH=/opt/fluxwarden/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    FLUXWARDEN_POLICIES=/etc/fluxwarden/policies/flux-best-practices.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["fluxwarden"]
CMD ["serve", "--cert-file=/etc/fluxwarden/tls/tls.crt", "--key-file=/etc/fluxwarden/tls/tls.key"]
