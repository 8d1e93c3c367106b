# registry-mirror container image.
#
#   docker build -t registry-mirror:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run -d -p 5000:5000 -v mirror-cache:/var/cache/registry-mirror registry-mirror:0.1.0
#
# Build arguments:
#   BASE          the image both stages start from: Debian (or Debian-based) with
#                 python3 >= 3.11 and its venv module. Default: the official Python image.
#                 deploy/image/debian-base builds one from Debian packages alone.
#   VERSION       the package version, for the org.opencontainers.image.version label;
#                 the build fails if it differs from what was installed.
#   REVISION, SOURCE_URL   the commit and repository, for the OCI labels.
#   PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX   where pip finds the dependencies
#                 (a private index, or a local wheel directory served over HTTP).
# docs/deploy.md has the whole story: volumes, configuration, read-only root.

ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/registry-mirror
# Dependencies first, in a layer of their own: a change to the code alone
# rebuilds from the next step on.
COPY pyproject.toml README.md /src/
RUN mkdir /src/mirror && /opt/registry-mirror/bin/pip install --quiet /src \
 && /opt/registry-mirror/bin/pip uninstall --quiet --yes registry-mirror
# botocore carries the API model of every AWS service (27 MB); the mirror calls
# S3, and STS/SSO when credentials come from a role (IRSA) or an SSO profile.
RUN cd /opt/registry-mirror/lib/python3*/site-packages/botocore/data \
 && find . -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +
COPY mirror /src/mirror
ARG VERSION
RUN /opt/registry-mirror/bin/pip install --quiet --no-deps /src \
 && /opt/registry-mirror/bin/pip uninstall --quiet --yes pip setuptools \
 && installed="$(/opt/registry-mirror/bin/registry-mirror --version)" \
 && echo "built ${installed}" \
 && if [ -n "${VERSION}" ] && [ "${installed}" != "registry-mirror ${VERSION}" ]; then \
        echo "VERSION=${VERSION} but the package says: ${installed}" >&2; exit 1; fi

FROM ${BASE}
COPY --from=build /opt/registry-mirror /opt/registry-mirror
COPY deploy/image/mirror.toml /etc/registry-mirror/mirror.toml
# A fixed, unprivileged UID (65532, as distroless' "nonroot"); the cache volume
# is created owned by it, so a new named volume is writable.
RUN mkdir -p /var/cache/registry-mirror && chown 65532:65532 /var/cache/registry-mirror
ENV PATH=/opt/registry-mirror/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MIRROR_CONFIG=/etc/registry-mirror/mirror.toml
USER 65532:65532
VOLUME /var/cache/registry-mirror
EXPOSE 5000
# docker stop sends SIGTERM and waits 10 s: shutdown_grace (8 s) fits in it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["registry-mirror", "healthcheck"]
ENTRYPOINT ["registry-mirror"]
CMD ["serve"]
# Last: the commit changes with every build, and nothing after it must rebuild.
ARG VERSION
ARG REVISION
ARG SOURCE_URL
LABEL org.opencontainers.image.title="registry-mirror" \
      org.opencontainers.image.description="Pull-through caching mirror for OCI / Docker registries, with a verified disk or S3 cache" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}"

