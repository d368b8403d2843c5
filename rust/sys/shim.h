/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C half of vblk's abstraction layer: prototypes of the shim functions that
 * Rust calls (bindgen reads this file), and of the Rust functions the shim
 * calls back.
 */
#ifndef VBLK_SHIM_H
#define VBLK_SHIM_H

#include <linux/types.h>

/* The control device's ioctl handler, implemented in Rust (rust/sys/control.rs). */
typedef long (*vblk_control_fn)(const void *ctx, unsigned int cmd, unsigned long arg);

/* Shim functions, called from Rust (rust/sys). */
int vblk_shim_control_register(vblk_control_fn handler, const void *ctx);
void vblk_shim_control_deregister(void);
bool vblk_shim_capable_sys_admin(void);

#endif /* VBLK_SHIM_H */
