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

/* ---- blk-mq disks (rust/sys/disk.rs) ---- */
#ifndef VBLK_SHIM_DISK_H
#define VBLK_SHIM_DISK_H

struct request;
struct vblk_disk;

/* Called for every request; must end it (now or later). Implemented in Rust. */
typedef void (*vblk_queue_rq_fn)(const void *ctx, struct request *rq);

/* Operation of a request, as vblk sees it. */
enum vblk_op {
	VBLK_OP_READ = 0,
	VBLK_OP_WRITE = 1,
	VBLK_OP_FLUSH = 2,
	VBLK_OP_DISCARD = 3,
	VBLK_OP_WRITE_ZEROES = 4,
	VBLK_OP_OTHER = 5,
};

/* Status values handed to vblk_shim_rq_end (the kernel's blk_status_t). */
enum vblk_status {
	VBLK_STS_OK = 0,
	VBLK_STS_IOERR = 10,
};

struct vblk_disk *vblk_shim_disk_create(vblk_queue_rq_fn queue_rq, const void *ctx,
					unsigned int index, u64 sectors, int *err);
void vblk_shim_disk_destroy(struct vblk_disk *d);
u32 vblk_shim_disk_devt(const struct vblk_disk *d);
int vblk_shim_disk_openers(const struct vblk_disk *d);
int vblk_shim_disk_claim_for_removal(struct vblk_disk *d);
void vblk_shim_disk_set_capacity(struct vblk_disk *d, u64 sectors);
void vblk_shim_disk_quiesce(struct vblk_disk *d);
void vblk_shim_disk_unquiesce(struct vblk_disk *d);

enum vblk_op vblk_shim_rq_op(const struct request *rq);
u64 vblk_shim_rq_pos(const struct request *rq);
u32 vblk_shim_rq_sectors(const struct request *rq);
void vblk_shim_rq_zero_fill(struct request *rq);
void vblk_shim_rq_end(struct request *rq, u8 status);

#endif
