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

/* ---- blk-mq disks ---- */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/bio.h>
#include <linux/slab.h>

struct vblk_disk {
	struct blk_mq_tag_set set;
	struct gendisk *disk;
	vblk_queue_rq_fn queue_rq;
	const void *ctx;
	/* Set under disk->open_mutex once removal is decided: opens fail. */
	bool dying;
};

static blk_status_t vblk_mq_queue_rq(struct blk_mq_hw_ctx *hctx,
				     const struct blk_mq_queue_data *bd)
{
	struct vblk_disk *d = hctx->queue->queuedata;

	blk_mq_start_request(bd->rq);
	d->queue_rq(d->ctx, bd->rq);
	return BLK_STS_OK;
}

static const struct blk_mq_ops vblk_mq_ops = {
	.queue_rq = vblk_mq_queue_rq,
};

/* Called with disk->open_mutex held, like the removal claim below. */
static int vblk_bdev_open(struct gendisk *disk, blk_mode_t mode)
{
	struct vblk_disk *d = disk->private_data;

	return d->dying ? -ENXIO : 0;
}

static const struct block_device_operations vblk_bdev_ops = {
	.owner = THIS_MODULE,
	.open = vblk_bdev_open,
};

struct vblk_disk *vblk_shim_disk_create(vblk_queue_rq_fn queue_rq, const void *ctx,
					unsigned int index, u64 sectors, int *err)
{
	struct queue_limits lim = {
		.logical_block_size = 512,
		.max_hw_sectors = 2048,
		.max_segments = BIO_MAX_VECS,
	};
	struct vblk_disk *d;
	int ret;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d) {
		*err = -ENOMEM;
		return NULL;
	}
	d->queue_rq = queue_rq;
	d->ctx = ctx;
	d->set.ops = &vblk_mq_ops;
	d->set.nr_hw_queues = 1;
	d->set.queue_depth = 128;
	d->set.numa_node = NUMA_NO_NODE;
	/* queue_rq may sleep (it will allocate and submit lower bios). */
	d->set.flags = BLK_MQ_F_BLOCKING | BLK_MQ_F_STACKING;
	ret = blk_mq_alloc_tag_set(&d->set);
	if (ret)
		goto free_d;

	d->disk = blk_mq_alloc_disk(&d->set, &lim, d);
	if (IS_ERR(d->disk)) {
		ret = PTR_ERR(d->disk);
		goto free_set;
	}
	d->disk->fops = &vblk_bdev_ops;
	d->disk->private_data = d;
	d->disk->flags |= GENHD_FL_NO_PART;
	snprintf(d->disk->disk_name, DISK_NAME_LEN, "vblk%u", index);
	set_capacity(d->disk, sectors);
	ret = add_disk(d->disk);
	if (ret)
		goto put;
	return d;

put:
	put_disk(d->disk);
free_set:
	blk_mq_free_tag_set(&d->set);
free_d:
	kfree(d);
	*err = ret;
	return NULL;
}

void vblk_shim_disk_destroy(struct vblk_disk *d)
{
	del_gendisk(d->disk);
	put_disk(d->disk);
	blk_mq_free_tag_set(&d->set);
	kfree(d);
}

u32 vblk_shim_disk_devt(const struct vblk_disk *d)
{
	return disk_devt(d->disk);
}

int vblk_shim_disk_openers(const struct vblk_disk *d)
{
	return atomic_read(&d->disk->part0->bd_openers);
}

/*
 * Decides removal atomically with respect to opens: -EBUSY if the disk is
 * open, else marks it dying so no open can succeed from now on.
 */
int vblk_shim_disk_claim_for_removal(struct vblk_disk *d)
{
	int ret = 0;

	mutex_lock(&d->disk->open_mutex);
	if (atomic_read(&d->disk->part0->bd_openers))
		ret = -EBUSY;
	else
		d->dying = true;
	mutex_unlock(&d->disk->open_mutex);
	return ret;
}

void vblk_shim_disk_set_capacity(struct vblk_disk *d, u64 sectors)
{
	set_capacity_and_notify(d->disk, sectors);
}

/* Returns once no queue_rq runs; new requests wait in blk-mq (they do not fail). */
void vblk_shim_disk_quiesce(struct vblk_disk *d)
{
	blk_mq_quiesce_queue(d->disk->queue);
}

void vblk_shim_disk_unquiesce(struct vblk_disk *d)
{
	blk_mq_unquiesce_queue(d->disk->queue);
}

enum vblk_op vblk_shim_rq_op(const struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ:
		return VBLK_OP_READ;
	case REQ_OP_WRITE:
		return VBLK_OP_WRITE;
	case REQ_OP_FLUSH:
		return VBLK_OP_FLUSH;
	case REQ_OP_DISCARD:
		return VBLK_OP_DISCARD;
	case REQ_OP_WRITE_ZEROES:
		return VBLK_OP_WRITE_ZEROES;
	default:
		return VBLK_OP_OTHER;
	}
}

u64 vblk_shim_rq_pos(const struct request *rq)
{
	return blk_rq_pos(rq);
}

u32 vblk_shim_rq_sectors(const struct request *rq)
{
	return blk_rq_sectors(rq);
}

void vblk_shim_rq_zero_fill(struct request *rq)
{
	struct bio *bio;

	__rq_for_each_bio(bio, rq)
		zero_fill_bio(bio);
}

void vblk_shim_rq_end(struct request *rq, u8 status)
{
	blk_mq_end_request(rq, (__force blk_status_t)status);
}
