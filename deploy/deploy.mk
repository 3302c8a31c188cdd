# Container images and the compose stack on podman (included by the Makefile).
# No Docker Engine and no image registry here: the base image is built with debootstrap,
# and podman runs deploy/docker-compose.yml through podman-compose. See docs/deploy.md.
export CONTAINERS_CONF := $(CURDIR)/deploy/containers.conf
PODMAN          ?= podman
IMAGE_CACHE     := .cache/images
BASE_TAR        := $(IMAGE_CACHE)/base-bookworm.tar
BASE_IMAGE      := localhost/cookline-base:bookworm
# Tagged per checkout, so worktrees building side by side on one machine never run each other's code.
CHECKOUT_TAG    := dev-$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)
APP_IMAGE       := localhost/cookline:$(CHECKOUT_TAG)
S3_IMAGE        := localhost/cookline-s3-seaweedfs:4.48-$(CHECKOUT_TAG)
# The host's CA bundle, mounted read-only while building so pip can verify PyPI;
# it is not copied into any image.
HOST_CA         := /etc/ssl/certs/ca-certificates.crt
BUILD_FLAGS     := --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg PIP_CERT=/run/host-ca.crt \
                   --volume $(HOST_CA):/run/host-ca.crt:ro
# Set before COMPOSE, which is expanded at once (`:=`): an empty name made `-p  up -d` fail.
COMPOSE_PROJECT ?= cookline
# Compose files over deploy/docker-compose.yml, e.g. COMPOSE_OVERRIDES=deploy/compose.replicas.yaml
# (give the same to compose-down).
COMPOSE_OVERRIDES ?=
COMPOSE         := $(BIN)/podman-compose -f deploy/docker-compose.yml $(COMPOSE_OVERRIDES:%=-f %) -p $(COMPOSE_PROJECT)

.PHONY: deploy-tools base-image images compose-up compose-down

# podman, runc and debootstrap from Debian (CI runs as root on a fresh machine).
deploy-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap; }

# Debian bookworm with python3, venv and CA certificates, debootstrapped once into .cache.
$(BASE_TAR):
	@$(MAKE) --no-print-directory deploy-tools
	@# a debootstrap killed mid-way leaves proc mounted in the rootfs: unmount it before deleting
	@awk '$$2 ~ "^$(CURDIR)/$(IMAGE_CACHE)/rootfs/" {print $$2}' /proc/mounts | sort -r | xargs -r umount
	rm -rf --one-file-system $(IMAGE_CACHE)/rootfs && mkdir -p $(IMAGE_CACHE)
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm $(IMAGE_CACHE)/rootfs
	rm -rf $(IMAGE_CACHE)/rootfs/var/cache/apt/archives/*.deb $(IMAGE_CACHE)/rootfs/var/lib/apt/lists/*
	tar -C $(IMAGE_CACHE)/rootfs -cf $@.tmp . && mv $@.tmp $@ && rm -rf $(IMAGE_CACHE)/rootfs

base-image: $(BASE_TAR) deploy-tools
	$(PODMAN) image exists $(BASE_IMAGE) || $(PODMAN) import -q $(BASE_TAR) $(BASE_IMAGE)

# The app image and the S3 stand-in; podman reuses cached layers, so a rebuild is quick.
images: base-image
	$(PODMAN) build -q $(BUILD_FLAGS) -f deploy/Dockerfile -t $(APP_IMAGE) .
	$(PODMAN) build -q $(BUILD_FLAGS) -f deploy/s3-seaweedfs.Dockerfile -t $(S3_IMAGE) deploy

# The compose stack on podman, with the locally built images.
compose-up: install images
	COOKLINE_IMAGE=$(APP_IMAGE) COOKLINE_S3_IMAGE=$(S3_IMAGE) $(COMPOSE) up -d

compose-down:
	COOKLINE_IMAGE=$(APP_IMAGE) COOKLINE_S3_IMAGE=$(S3_IMAGE) $(COMPOSE) down -v
