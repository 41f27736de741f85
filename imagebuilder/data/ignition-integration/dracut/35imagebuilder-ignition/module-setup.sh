#!/bin/bash
# imagebuilder: makes Debian's Ignition 2.14 (dracut module 30ignition) work on an
# OSTree system built by imagebuilder, the way Fedora CoreOS' ignition-dracut +
# coreos-installer integration does. Installed into the tree by the
# ignition.integration stage and pulled into the initramfs by
# /etc/dracut.conf.d/35-imagebuilder-ignition.conf (ostree.prepare runs dracut).

check() {
    # only when asked for (dracut.conf.d/35-imagebuilder-ignition.conf)
    return 255
}

depends() {
    echo ignition ostree systemd
}

install() {
    local unit
    inst_multiple mount umount mkdir cp rm mv cat sync readlink dirname sed grep seq sleep tr \
        systemctl systemd-tmpfiles
    inst_multiple -o findmnt

    # /boot/ignition/config.ign -> /usr/lib/ignition/user.ign (metal platform, as FCOS)
    inst_script "$moddir/imagebuilder-ignition-setup-user" /usr/sbin/imagebuilder-ignition-setup-user
    # stateroot /var on /sysroot/var for Ignition's files stage (users, /var/lib/...)
    inst_script "$moddir/imagebuilder-ignition-var" /usr/sbin/imagebuilder-ignition-var
    # a real kernelArguments implementation replacing Debian's stub (exit 1);
    # 30ignition installed the stub first and dracut-install never overwrites
    rm -f "$initdir/usr/sbin/ignition-kargs-helper"
    inst_script "$moddir/ignition-kargs-helper" /usr/sbin/ignition-kargs-helper

    # SELinux: Debian ships no policy and does not enable SELinux, but Debian's
    # Ignition is built with relabeling on and runs `setfiles` after the files stage.
    # Only when the image has no real setfiles (no policycoreutils) we put a no-op
    # one into the initramfs; a tree with SELinux set up keeps the real tool (30ignition).
    if [ ! -x "$dracutsysrootdir/usr/sbin/setfiles" ] && [ ! -x "$dracutsysrootdir/sbin/setfiles" ]; then
        inst_script "$moddir/setfiles-noop" /usr/sbin/setfiles
    fi

    for unit in imagebuilder-ignition-setup-user.service \
                imagebuilder-ignition-mount-var.service \
                imagebuilder-ignition-populate-var.service \
                imagebuilder-kargs-reboot.service; do
        inst_simple "$moddir/$unit" "$systemdsystemunitdir/$unit"
        mkdir -p "$initdir/$systemdsystemunitdir/ignition-complete.target.requires"
        ln_r "$systemdsystemunitdir/$unit" \
            "$systemdsystemunitdir/ignition-complete.target.requires/$unit"
    done
    # ignition-kargs must wait for the boot disk (the helper edits its BLS entry)
    inst_simple "$moddir/ignition-kargs-boot-disk.conf" \
        "$systemdsystemunitdir/ignition-kargs.service.d/10-imagebuilder-boot-disk.conf"
}
