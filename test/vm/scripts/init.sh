#!/bin/busybox sh
# /init of nsnet's test VM (package test/vm), run by busybox as PID 1.
#
# Stage 1 runs from the initramfs. It loads the kernel modules listed in
# /vmtest/modules (in dependency order) and then leaves the initramfs,
# because pivot_root(2) cannot move away from it: either to a tmpfs copy of
# itself, where stage 2 runs the tests, or (kernel argument
# vmtest.mode=systemd) to the Debian image on the virtio disk with serial
# nsnet-root, whose systemd then runs the tests from vmtest.service.
#
# Every failure powers the VM off at once; the host notices the missing
# results.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

fail() {
	echo "vmtest init: $*"
	echo "##vmtest info init failed: $*" >/dev/ttyS1
	poweroff -f
	exit 1
}

# disk_by_serial prints /dev/vdX of the virtio disk with serial $1.
disk_by_serial() {
	for b in /sys/block/vd*; do
		[ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && echo "/dev/${b##*/}" && return 0
	done
	return 1
}

stage1() {
	/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /newroot
	/bin/busybox --install -s
	mount -t proc proc /proc || fail "mounting /proc"
	mount -t sysfs sysfs /sys || fail "mounting /sys"
	mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"
	echo "vmtest init: stage 1 at uptime $(cut -d' ' -f1 /proc/uptime)s"
	while read -r m; do
		insmod "$m" || fail "insmod $m"
	done </vmtest/modules
	echo "vmtest init: modules loaded at uptime $(cut -d' ' -f1 /proc/uptime)s"
	mode=busybox
	for arg in $(cat /proc/cmdline); do
		case $arg in vmtest.mode=*) mode=${arg#vmtest.mode=} ;; esac
	done
	if [ "$mode" = systemd ]; then
		root=$(disk_by_serial nsnet-root) || fail "no virtio disk with serial nsnet-root"
		mount -t ext4 "$root" /newroot || fail "mounting $root"
		rm -rf /newroot/vmtest /newroot/lib/modules
		# The payload goes to a tmpfs: cheaper than writing it through the
		# snapshot overlay of the disk.
		mkdir /newroot/vmtest
		mount -t tmpfs -o mode=0755 vmtest /newroot/vmtest || fail "mounting /vmtest"
		cp -a /vmtest/. /newroot/vmtest/ || fail "copying /vmtest"
		mkdir -p /newroot/lib/modules /newroot/vmtest/tools
		cp -a /lib/modules/. /newroot/lib/modules/
		cp /bin/busybox /newroot/vmtest/tools/busybox
		units=/newroot/etc/systemd/system
		cp /vmtest/systemd/vmtest.service $units/ || fail "installing vmtest.service"
		mkdir -p $units/multi-user.target.wants
		ln -sf ../vmtest.service $units/multi-user.target.wants/vmtest.service
		# Nothing logs in, and nothing periodic or slow runs in a VM that
		# lives for a minute.
		for u in serial-getty@ttyS0.service serial-getty@ttyS1.service getty@tty1.service \
			systemd-timesyncd.service systemd-firstboot.service e2scrub_reap.service \
			apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
			ln -sf /dev/null "$units/$u"
		done
		umount /proc /sys /dev
		exec switch_root /newroot /lib/systemd/systemd
	fi
	mount -t tmpfs -o size=75%,mode=0755 root /newroot || fail "mounting the tmpfs root"
	for f in /*; do
		case $f in
		/proc | /sys | /dev | /newroot) mkdir -p "/newroot$f" ;;
		*) cp -a "$f" /newroot/ || fail "copying $f" ;;
		esac
	done
	touch /newroot/.vmtest-stage2
	umount /proc /sys /dev
	exec switch_root /newroot /init
}

stage2() {
	mount -t proc proc /proc || fail "mounting /proc"
	mount -t sysfs sysfs /sys || fail "mounting /sys"
	mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"
	echo "vmtest init: stage 2 at uptime $(cut -d' ' -f1 /proc/uptime)s"
	mkdir -p /dev/pts /dev/shm /run /tmp
	mount -t devpts -o ptmxmode=0666 devpts /dev/pts || fail "mounting /dev/pts"
	mount -t tmpfs -o mode=1777 shm /dev/shm || fail "mounting /dev/shm"
	mount -t tmpfs -o mode=0755 run /run || fail "mounting /run"
	chmod 1777 /tmp
	# A pure v2 host as systemd sets it up: one hierarchy, every controller
	# available to children of the root.
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mounting cgroup2"
	for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || fail "enabling controller $c"
	done
	ip link set lo up
	hostname nsnet-vm
	/vmtest/runner -plan /vmtest/plan.json
	poweroff -f
}

if [ -e /.vmtest-stage2 ]; then
	stage2
else
	stage1
fi
