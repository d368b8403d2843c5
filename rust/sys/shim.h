/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C half of vblk's abstraction layer: prototypes of the shim functions that
 * Rust calls (bindgen reads this file), and of the Rust functions the shim
 * calls back.
 */
#ifndef VBLK_SHIM_H
#define VBLK_SHIM_H

#include <linux/types.h>

struct file;

/* Shim functions, called from Rust (rust/sys). */
int vblk_shim_control_register(void);
void vblk_shim_control_deregister(void);
bool vblk_shim_capable_sys_admin(void);

/* Implemented in Rust (rust/sys/control.rs), called from the shim. */
long vblk_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

#endif /* VBLK_SHIM_H */
