# Installs tabula and its initrd integration. `make install` = binary + shared files + prune and sync units;
# add the family your distribution uses: install-dracut, install-initramfs-tools, install-mkinitcpio.
# DESTDIR is honoured (packaging, or a chroot: `make install install-dracut DESTDIR=/mnt`).
PREFIX ?= /usr
DESTDIR ?=
TARGET ?= x86_64-unknown-linux-gnu
TABULA_BIN ?= target/$(TARGET)/release/tabula
LIBDIR = $(DESTDIR)$(PREFIX)/lib/tabula
UNITDIR = $(DESTDIR)$(PREFIX)/lib/systemd/system

.PHONY: static install install-bin install-common install-dracut install-initramfs-tools install-mkinitcpio

# The initrd needs a static binary: nothing else is copied in with it.
static:
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target $(TARGET)

install: install-bin install-common

install-bin:
	install -D -m 0755 $(TABULA_BIN) $(DESTDIR)$(PREFIX)/bin/tabula

install-common:
	# The systemd generator is the binary itself, under this name (for initrds built by hand).
	install -d $(LIBDIR)
	ln -sf $(PREFIX)/bin/tabula $(LIBDIR)/tabula-generator
	install -D -m 0644 initrd/systemd/tabula-rollback.service $(LIBDIR)/units/tabula-rollback.service
	install -D -m 0644 initrd/systemd/tabula-persist.service $(LIBDIR)/units/tabula-persist.service
	install -D -m 0644 initrd/systemd/tabula-prune.service $(UNITDIR)/tabula-prune.service
	install -D -m 0644 initrd/systemd/tabula-prune.timer $(UNITDIR)/tabula-prune.timer
	install -D -m 0644 initrd/systemd/tabula-persist-sync.service $(UNITDIR)/tabula-persist-sync.service
	install -D -m 0644 initrd/systemd/tabula-persist-sync-shutdown.service $(UNITDIR)/tabula-persist-sync-shutdown.service
	# On the running system the same generator (the binary) writes the path unit of `how = "copy"` entries.
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system-generators
	ln -sf $(PREFIX)/bin/tabula $(DESTDIR)$(PREFIX)/lib/systemd/system-generators/tabula-generator

install-dracut: install-common
	install -D -m 0755 initrd/dracut/90tabula/module-setup.sh $(DESTDIR)$(PREFIX)/lib/dracut/modules.d/90tabula/module-setup.sh
	install -D -m 0755 initrd/dracut/90tabula/tabula-rollback.sh $(DESTDIR)$(PREFIX)/lib/dracut/modules.d/90tabula/tabula-rollback.sh
	install -D -m 0755 initrd/dracut/90tabula/tabula-persist.sh $(DESTDIR)$(PREFIX)/lib/dracut/modules.d/90tabula/tabula-persist.sh

install-initramfs-tools: install-common
	install -D -m 0755 initrd/initramfs-tools/hooks/tabula $(DESTDIR)$(PREFIX)/share/initramfs-tools/hooks/tabula
	install -D -m 0755 initrd/initramfs-tools/scripts/local-premount/tabula $(DESTDIR)$(PREFIX)/share/initramfs-tools/scripts/local-premount/tabula
	install -D -m 0755 initrd/initramfs-tools/scripts/local-bottom/tabula $(DESTDIR)$(PREFIX)/share/initramfs-tools/scripts/local-bottom/tabula

install-mkinitcpio: install-common
	install -D -m 0644 initrd/mkinitcpio/install/tabula $(DESTDIR)$(PREFIX)/lib/initcpio/install/tabula
	install -D -m 0644 initrd/mkinitcpio/install/sd-tabula $(DESTDIR)$(PREFIX)/lib/initcpio/install/sd-tabula
	install -D -m 0644 initrd/mkinitcpio/hooks/tabula $(DESTDIR)$(PREFIX)/lib/initcpio/hooks/tabula
