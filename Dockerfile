# fluxwarden: the production image. Build: docker build -t ghcr.io/fluxwarden/fluxwarden:0.1.0 .
# Stage 1 builds wheels (with whatever build tools they need); stage 2 installs only the wheels.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# No compilers, no pip cache, no source tree: only the installed package and the policy set.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels \
    && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin fluxwarden
COPY policies/flux-best-practices.yaml /etc/fluxwarden/policies/flux-best-practices.yaml
ENV FLUXWARDEN_POLICIES=/etc/fluxwarden/policies/flux-best-practices.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["fluxwarden"]
CMD ["serve", "--cert-file=/etc/fluxwarden/tls/tls.crt", "--key-file=/etc/fluxwarden/tls/tls.key"]
