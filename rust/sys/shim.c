// SPDX-License-Identifier: GPL-2.0
/*
 * C half of vblk's abstraction layer.
 *
 * It holds what is simplest and safest in C: static initialisers that name
 * THIS_MODULE and generic helpers (the control device's file_operations),
 * and static inline kernel helpers that Rust cannot call directly. Every
 * function here is a thin, logic-free wrapper; the Rust side (rust/sys)
 * documents the safety contract of each.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

#include "shim.h"

/* Set before misc_register() publishes the device, constant afterwards. */
static vblk_control_fn vblk_control_handler;
static const void *vblk_control_ctx;

static long vblk_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return vblk_control_handler(vblk_control_ctx, cmd, arg);
}

static const struct file_operations vblk_control_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.llseek = noop_llseek,
	.unlocked_ioctl = vblk_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* /dev/vblk-control: root-only, like /dev/mapper/control. */
static struct miscdevice vblk_control_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vblk-control",
	.nodename = "vblk-control",
	.mode = 0600,
	.fops = &vblk_control_fops,
};

int vblk_shim_control_register(vblk_control_fn handler, const void *ctx)
{
	vblk_control_handler = handler;
	vblk_control_ctx = ctx;
	return misc_register(&vblk_control_misc);
}

void vblk_shim_control_deregister(void)
{
	misc_deregister(&vblk_control_misc);
}

bool vblk_shim_capable_sys_admin(void)
{
	return capable(CAP_SYS_ADMIN);
}
