"""Where CoreOS keeps things: paths in the live ISO and in the live initramfs.

ISO paths are the 8.3 ISO 9660 names coreos-installer looks files up by (without Rock
Ridge); initramfs paths are relative member names.
"""

# in the ISO
IGNINFO_PATH = "COREOS/IGNINFO.JSO"
IGNITION_IMG_PATH = "IMAGES/IGNITION.IMG"
KARGS_INFO_PATH = "COREOS/KARGS.JSO"
FEATURES_PATH = "COREOS/FEATURES.JSO"
PXEBOOT_DIR = "IMAGES/PXEBOOT"
#: files whose presence makes an ISO a CoreOS live ISO with embed areas
EMBED_AREA_MARKERS = ("/coreos/igninfo.json", "/images/ignition.img", "/coreos/kargs.json")

# in the initramfs (the ISO's embed area or a PXE initramfs)
IGNITION_PATH = "config.ign"
NETWORK_DIR = "etc/coreos-firstboot-network"
INITRD_FEATURES_PATH = "etc/coreos/features.json"
LIVE_STAMP = "etc/coreos-live-initramfs"
