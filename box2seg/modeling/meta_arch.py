"""Box2Seg meta-architecture: one encoder, three decoders (y, alpha, beta), trained from boxes.

Training has two phases decided by the iteration counter alone (so ``--resume`` is exact): the first
``PRETRAIN_ITERS`` iterations train only the encoder and embedding decoder with L_A_pre on the GrabCut
maps; then all losses train jointly (L_fg and L_fr from ``LOSS.ATTENTION_START_ITER`` on, if that is later).
Inference runs the y branch only and returns ``[{"sem_seg": (L+1, H, W) probabilities}]`` for
SemSegEvaluator, plus ``"box_masks"`` (one mask per input annotation, box-conditioned) when the input carries
its boxes.

Chip mode (MODEL.BOX2SEG.CHIPS.ENABLED; docs/chips.md) trains on box-centred chips (data/chip_mapper.py),
which reach this module in the whole-image format, so training is the same code. Inference needs the boxes:
one chip per box, batched, each chip's foreground probability pasted back into the image and thresholded
inside its box, never empty (``box_conditioned.never_empty_masks``); ``"box_scores"`` gives each mask's mean
probability and ``"sem_seg"`` is the masks painted (smaller box wins), one-hot, for SemSegEvaluator.
"""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from ..structures import (PIXEL_CENTRES, box_coordinates, box_pixel_masks, boxes_in_own_chips, chip_regions,
                          crop_chips, crop_own_chips, ellipse_prior, flip_boxes_horizontally, paste_chip_probs)
from .box_conditioned import box_conditioned_masks, fuse_grabcut, never_empty_masks, smallest_box_owner
from .checks import check_box2seg_config
from .colour_crf import colour_crf
from .decoders import build_box2seg_decoders
from .losses import ATTENTION_TERMS, Box2SegLoss
from .targets import build_targets, unlabelled_classes

__all__ = ["Box2Seg"]


def _current_iteration():
    try:
        return get_event_storage().iter
    except AssertionError:  # outside a trainer: no event storage
        return None


@META_ARCH_REGISTRY.register()
class Box2Seg(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone,
        decoders,
        loss,
        num_classes,  # L foreground classes
        ignore_label,
        pixel_mean,
        pixel_std,
        size_divisibility=32,
        pretrain_iters=0,
        labels_exhaustive=True,
        test_flip=False,
        test_scales=(1.0,),
        box_masks_at_test=True,
        box_rule="class",
        chips=None,
        input_format="BGR",
        channels_last=False,
    ):
        """``chips``: None (whole-image mode) or a dict with size, context, class_agnostic, test_batch,
        threshold, fallback_fill, ellipse_prior, prior_scale, coord_channels, grabcut_weight (MODEL.BOX2SEG.CHIPS;
        with grabcut_weight > 0 each input carries ``grabcut_own_masks``, its boxes' own GrabCut masks) and crf
        (None, or the keyword arguments of ``colour_crf``: MODEL.BOX2SEG.CHIPS.CRF).
        ``input_format``: the images' channel order (INPUT.FORMAT), for the pairwise term's colours.
        ``channels_last``: convolutions in NHWC memory layout (the default on CPU: oneDNN's convolutions are
        about 20% faster per chip-mode step in it; the same numbers up to float rounding)."""
        super().__init__()
        self.chips = chips
        self.class_agnostic = bool(chips and chips["class_agnostic"])
        # Chip mode's ellipse-prior offset: background logit - scale * ellipse_prior(own box), scale learnt.
        self.prior_scale = nn.Parameter(torch.tensor(float(chips["prior_scale"]))) if chips and chips["ellipse_prior"] else None
        self.backbone = backbone
        self.decoders = decoders
        self.loss = loss
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.size_divisibility = max(size_divisibility, backbone.size_divisibility)
        self.pretrain_iters = pretrain_iters
        self.labels_exhaustive = labels_exhaustive
        self.test_flip = test_flip
        self.test_scales = tuple(test_scales)
        self.box_masks_at_test = box_masks_at_test
        self.box_rule = box_rule
        self.coord_channels = bool(chips and chips.get("coord_channels"))
        self.input_format = input_format
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=self.memory_format)  # 4-D weights; loading a checkpoint copies into them
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        check_box2seg_config(cfg)  # before anything is built: a bad value is named now, not after training
        backbone = build_backbone(cfg)
        b = cfg.MODEL.BOX2SEG
        chips = None
        head_cfg = cfg
        if b.CHIPS.ENABLED:
            chips = {"size": b.CHIPS.SIZE, "context": b.CHIPS.CONTEXT, "class_agnostic": b.CHIPS.CLASS_AGNOSTIC,
                     "test_batch": b.CHIPS.TEST_BATCH, "threshold": b.CHIPS.THRESHOLD,
                     "fallback_fill": b.CHIPS.FALLBACK_FILL, "ellipse_prior": b.CHIPS.ELLIPSE_PRIOR,
                     "prior_scale": b.CHIPS.PRIOR_SCALE, "coord_channels": b.CHIPS.COORD_CHANNELS,
                     "grabcut_weight": b.CHIPS.GRABCUT_WEIGHT, "crf": None}
            if b.CHIPS.CRF.ENABLED:
                c = b.CHIPS.CRF
                chips["crf"] = {"weight": c.WEIGHT, "theta_colour": c.THETA_COLOUR, "theta_space": c.THETA_SPACE,
                                "window": c.WINDOW, "steps": c.STEPS}
            if b.CHIPS.CLASS_AGNOSTIC:  # the heads see one foreground class; the outputs keep the dataset's
                head_cfg = cfg.clone()
                head_cfg.defrost()
                head_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
        loss = Box2SegLoss(
            terms=b.LOSS.TERMS,
            w_gc=b.LOSS.GC_WEIGHT,
            w_fg=b.LOSS.FG_WEIGHT,
            w_bg=b.LOSS.BG_WEIGHT,
            w_fr=b.LOSS.FR_WEIGHT,
            w_aff=b.LOSS.AFFINITY_WEIGHT,
            w_aff_pre=b.LOSS.AFFINITY_PRETRAIN_WEIGHT,
            gamma=b.LOSS.GAMMA,
            aff_num_samples=b.AFFINITY.NUM_SAMPLES,
            aff_boundary_fraction=b.AFFINITY.BOUNDARY_FRACTION,
            aff_band_width=b.AFFINITY.BOUNDARY_WIDTH,
            aff_detach=b.AFFINITY.DETACH,
            attention_start_iter=b.LOSS.ATTENTION_START_ITER,
            w_proj=b.LOSS.PROJ_WEIGHT,
            fg_pull_cap=b.LOSS.FG_PULL_CAP,
            w_pair=b.LOSS.PAIR_WEIGHT,
            pair_threshold=b.LOSS.PAIR_THRESHOLD,
            pair_stride=b.LOSS.PAIR_STRIDE,
            pair_dilation=b.LOSS.PAIR_DILATION,
            ramp_iters=b.LOSS.RAMP_ITERS,
            affinity_start_iter=b.PRETRAIN_ITERS,
            class_average=b.LOSS.CLASS_AVERAGE,
        )
        exhaustive = all(
            MetadataCatalog.get(name).get("box_labels_exhaustive", True) for name in cfg.DATASETS.TRAIN
        )
        feature_shape = backbone.output_shape()
        if b.CHIPS.ENABLED and b.CHIPS.COORD_CHANNELS:  # the decoders read (u, v) beside every feature
            feature_shape = {k: ShapeSpec(channels=v.channels + 2, height=v.height, width=v.width, stride=v.stride)
                             for k, v in feature_shape.items()}
        return {
            "backbone": backbone,
            "decoders": build_box2seg_decoders(head_cfg, feature_shape),
            "loss": loss,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1,  # L: the head counts background too
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": cfg.MODEL.BOX2SEG.SIZE_DIVISIBILITY,
            "pretrain_iters": b.PRETRAIN_ITERS,
            "labels_exhaustive": exhaustive,
            "test_flip": b.TEST.FLIP,
            "test_scales": b.TEST.SCALES,
            "box_masks_at_test": b.TEST.BOX_MASKS,
            "box_rule": b.TEST.BOX_RULE,
            "chips": chips,
            "input_format": cfg.INPUT.FORMAT,
            "channels_last": cfg.MODEL.DEVICE == "cpu",
        }

    @property
    def ddp_find_unused_parameters(self):
        """Read by ``create_ddp_model`` (box2seg.compat): some iterations leave parameters without gradients
        when training has phases (embedding pre-training, a later attention start) or loss terms are off."""
        every_branch = any(t in self.loss.terms for t in ATTENTION_TERMS) and "aff" in self.loss.terms
        return self.pretrain_iters > 0 or self.loss.attention_start_iter > 0 or not every_branch

    @property
    def device(self):
        return self.pixel_mean.device

    def in_pretraining(self):
        iteration = _current_iteration()
        return iteration is not None and iteration < self.pretrain_iters

    def _images(self, batched_inputs):
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs):
        images = self._images(batched_inputs)
        if not self.training:
            return self.inference(batched_inputs, images)
        labels = ImageList.from_tensors(
            [x["grabcut_labels"].to(self.device) for x in batched_inputs], self.size_divisibility, self.ignore_label
        ).tensor
        instances = [x["instances"].to(self.device) for x in batched_inputs]
        num_classes = self.num_classes
        gt_classes = [i.gt_classes for i in instances]
        if self.class_agnostic:  # one foreground class: every box is "object", M's classes all become 1
            num_classes = 1
            gt_classes = [torch.zeros_like(c) for c in gt_classes]
            labels = torch.where((labels != self.ignore_label) & (labels > 0), torch.ones_like(labels), labels)
        unlabelled = None
        if not self.labels_exhaustive and not self.class_agnostic:
            unlabelled = [
                unlabelled_classes(
                    self.num_classes, x.get("verified_classes", ()), inst.gt_classes, device=self.device
                )
                for inst, x in zip(instances, batched_inputs)
            ]
        targets = build_targets(
            [i.gt_boxes for i in instances],
            gt_classes,
            [i.gt_is_crowd if i.has("gt_is_crowd") else None for i in instances],
            labels,
            num_classes,
            self.ignore_label,
            unlabelled,
            [i.gt_cut if i.has("gt_cut") else None for i in instances],
            [x.get("supervision", "boxes") for x in batched_inputs],
        )
        size = labels.shape[-2:]
        chip_boxes = None
        if self.chips is not None and (self.prior_scale is not None or self.coord_channels):
            chip_boxes = torch.stack([x["chip_box"] for x in batched_inputs]).to(self.device)
        features = self._chip_features(images.tensor, chip_boxes)
        if self.in_pretraining():
            # Embeddings stay at decoder resolution: the loss reads them only at the sampled pixels.
            embeddings = self.decoders.forward_beta(features).float()
            return self.loss.pretrain(embeddings.unbind(0), targets)

        iteration = _current_iteration()
        out = self.decoders.forward_branches(features, self.loss.branches(iteration))
        y, alpha, beta = out["y"], out.get("alpha"), out.get("beta")
        logits = self._upsample(y, size).float()
        if self.prior_scale is not None:
            logits = self._with_prior(logits, chip_boxes)
        log_probs = F.log_softmax(logits, dim=1)
        similarity = None
        if "pair" in self.loss.terms:
            with torch.no_grad():
                similarity = self.loss.colour_similarity(self._rgb(images.tensor)).unbind(0)
        if alpha is not None:
            # Only the present classes' channels go to full resolution (Open Images has 601).
            alpha = [self._present_attention(a, t.classes, size) for a, t in zip(alpha.unbind(0), targets)]
        if beta is not None:
            beta = beta.float().unbind(0)  # read at the sampled pixels only (losses._sample_pixels)
        # unbind, not [b]: autograd then stacks the per-image gradients once instead of allocating a
        # zero-filled batch-sized gradient per indexing (14% of a CPU step).
        return self.loss(log_probs.unbind(0), targets, alpha=alpha, embeddings=beta, iteration=iteration,
                         similarity=similarity)

    def _rgb(self, normalised):
        """RGB 0..255 of normalised (N, 3, H, W) model inputs (padding becomes the mean colour)."""
        raw = normalised * self.pixel_std + self.pixel_mean
        return raw.flip(1) if self.input_format == "BGR" else raw

    def _chip_features(self, x, chip_boxes=None):
        """Backbone features of (N, 3, H, W) inputs; with coordinate channels each feature map gets the chips'
        own-box coordinates (u, v) (structures.box_coordinates) appended."""
        features = self.backbone(x.contiguous(memory_format=self.memory_format))
        if not self.coord_channels:
            return features
        size = x.shape[-1]
        return {k: torch.cat([f, box_coordinates(chip_boxes, f.shape[-2], f.shape[-1], size).to(f.dtype)], dim=1)
                for k, f in features.items()}

    def _present_attention(self, alpha_logits, classes, size):
        """sigmoid(alpha) of the image's present classes at input resolution: (K, H, W); K may be 0."""
        if classes.numel() == 0:
            return alpha_logits.new_zeros((0, *size), dtype=torch.float32)
        return torch.sigmoid(self._upsample(alpha_logits[None, classes], size)[0].float())

    @staticmethod
    def _upsample(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def _class_probs(self, images):
        """Softmax of the y branch at the padded input size, averaged over the test scales and flips."""
        size = images.tensor.shape[-2:]
        total, count = 0.0, 0
        for scale in self.test_scales:
            x = images.tensor
            if scale != 1.0:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % self.size_divisibility, 0, (-h) % self.size_divisibility))
            for flip in (False, True) if self.test_flip else (False,):
                xi = x.flip(-1) if flip else x
                logits = self._upsample(self.decoders.forward_y(self.backbone(xi)), xi.shape[-2:])
                logits = (logits.flip(-1) if flip else logits)[..., :h, :w]
                total = total + F.softmax(self._upsample(logits, size).float(), dim=1)
                count += 1
        return total / count

    def inference(self, batched_inputs, images):
        if self.chips is not None:
            return [self._chip_inference(x) for x in batched_inputs]
        probs = self._class_probs(images)
        results = []
        for b, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            sem_seg = sem_seg_postprocess(probs[b], image_size, height, width)
            result = {"sem_seg": sem_seg}
            if self.box_masks_at_test and "instances" in x:
                result["box_masks"] = self._box_masks(sem_seg, x["instances"], image_size, height, width)
            results.append(result)
        return results

    def attention_maps(self, batched_inputs, classes=None):
        """sigmoid(alpha), the attention branch's per-class maps, in each input's output frame.

        Same path as :meth:`inference` (normalise, pad, upsample, crop, resize to "height" x "width"), one
        scale, no flip. ``classes``: None (all L) or one sequence of contiguous class ids per input; only
        those channels are upsampled (Open Images has 601). Returns a list of (K, height, width) tensors.
        """
        images = self._images(batched_inputs)
        alpha = self.decoders.forward_alpha(self.backbone(images.tensor))  # (N, L, H'/4, W'/4) logits
        results = []
        for b, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            logits = alpha[b] if classes is None else alpha[b, torch.as_tensor(classes[b]).long().to(alpha.device)]
            logits = self._upsample(logits[None].float(), images.tensor.shape[-2:])[0]
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            results.append(torch.sigmoid(sem_seg_postprocess(logits, image_size, height, width)))
        return results

    def _box_masks(self, sem_seg, instances, image_size, height, width):
        """One mask per input box in the output frame; crowd boxes get empty masks."""
        boxes = instances.gt_boxes.tensor.to(self.device).clone()
        boxes[:, 0::2] *= width / image_size[1]
        boxes[:, 1::2] *= height / image_size[0]
        classes = instances.gt_classes.to(self.device)
        keep = ~instances.gt_is_crowd.to(self.device) if instances.has("gt_is_crowd") else torch.ones_like(classes, dtype=torch.bool)
        masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=self.device)
        masks[keep] = box_conditioned_masks(sem_seg, boxes[keep], classes[keep], self.box_rule)
        return masks

    # ------------------------------------------------------------------------------------------ chip mode
    def _with_prior(self, logits, chip_boxes):
        """Chip logits (N, C, S, S) with the ellipse prior of each chip's own box taken off the background."""
        prior = ellipse_prior(chip_boxes, logits.shape[-1])
        return torch.cat([logits[:, :1] - self.prior_scale * prior[:, None], logits[:, 1:]], dim=1)

    def _forward_chips(self, image, regions, boxes):
        """Foreground probability (N, S, S) of the chips of ``regions`` cut from one raw (C, H, W) image:
        1 - y(background), which for one foreground class is y(object); flips averaged with TEST.FLIP."""
        size, out = self.chips["size"], []
        chip_boxes = boxes_in_own_chips(boxes, regions, size)
        for chunk, own in zip(regions.split(self.chips["test_batch"]), chip_boxes.split(self.chips["test_batch"])):
            x = (crop_chips(image, chunk, size) - self.pixel_mean) / self.pixel_std
            total = 0.0
            for flip in (False, True) if self.test_flip else (False,):
                seen = own
                if flip and self.coord_channels:
                    seen = own.new_tensor(flip_boxes_horizontally(own.cpu().numpy(), size))
                features = self._chip_features(x.flip(-1) if flip else x, seen)
                logits = self._upsample(self.decoders.forward_y(features), (size, size))
                logits = logits.float().flip(-1) if flip else logits.float()  # back in the chip's frame
                if self.prior_scale is not None:
                    logits = self._with_prior(logits, own)
                total = total + 1 - F.softmax(logits, 1)[:, 0]
            out.append(total / (2 if self.test_flip else 1))
        return torch.cat(out) if out else image.new_zeros((0, size, size))

    def chip_box_probs(self, x):
        """One input's boxes through their chips: ``(probs, inside, keep, boxes, classes)`` in the output frame
        ("height" x "width"): probs (K, H, W) uint8 x 255 pasted foreground probabilities and inside (K, H, W)
        the pixels of the K non-crowd boxes (``keep`` (N,) bool of the N input boxes, in output pixels)."""
        if "instances" not in x:
            raise ValueError(
                f"chip mode (MODEL.BOX2SEG.CHIPS.ENABLED) predicts masks for given boxes, and input "
                f"{x.get('file_name', '')!r} has none: pass the boxes (predict --boxes / a dataset with boxes), or "
                "use a whole-image config")
        image = x["image"].to(self.device).float()
        image_size = tuple(image.shape[-2:])
        height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
        inst = x["instances"]
        boxes = inst.gt_boxes.tensor.to(self.device).float()
        classes = inst.gt_classes.to(self.device)
        crowd = inst.gt_is_crowd.to(self.device) if inst.has("gt_is_crowd") else torch.zeros_like(classes, dtype=torch.bool)
        keep = ~crowd
        regions = chip_regions(boxes[keep], self.chips["context"])
        fg = self._forward_chips(image, regions, boxes[keep])
        scale = boxes.new_tensor([width / image_size[1], height / image_size[0]]).repeat(2)
        out_boxes = boxes * scale
        probs = paste_chip_probs(fg, regions * scale, height, width)
        inside = box_pixel_masks(out_boxes[keep], height, width, PIXEL_CENTRES)
        return probs, inside, keep, out_boxes, classes

    def _chip_inference(self, x):
        probs, inside, keep, boxes, classes = self.chip_box_probs(x)
        weight = self.chips.get("grabcut_weight", 0.0)
        if weight > 0:
            if "grabcut_own_masks" not in x:
                raise ValueError(
                    f"MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT={weight} averages each box's own GrabCut mask into its "
                    f"probabilities, and input {x.get('file_name', '')!r} has no 'grabcut_own_masks' (the test mapper "
                    "and the predictor add them); set it to 0 to predict from the model alone")
            probs = fuse_grabcut(probs, x["grabcut_own_masks"].to(self.device)[keep], weight)
        if self.chips.get("crf"):
            probs = self._with_colour_crf(x, probs, keep)
        kept_masks, kept_scores, filled = never_empty_masks(probs, inside, self.chips["threshold"],
                                                            self.chips["fallback_fill"])
        height, width = inside.shape[-2:]  # (0, H, W) without boxes
        masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=self.device)
        scores = torch.zeros(len(boxes), dtype=torch.float32, device=self.device)
        masks[keep], scores[keep] = kept_masks, kept_scores
        return {"sem_seg": self._painted(masks, boxes, classes, height, width), "box_masks": masks,
                "box_scores": scores, "num_filled_boxes": int(filled.sum())}

    def _with_colour_crf(self, x, probs, keep):
        """The K kept boxes' probabilities (K, H, W, output frame; float or uint8 x 255) refined by the colour CRF
        (``colour_crf``, MODEL.BOX2SEG.CHIPS.CRF) in each box's own chip, at the chip's size, and pasted back
        (uint8 x 255). Chips go through in TEST_BATCH chunks, which bounds the CRF's (chunk, k*k, S, S) kernel."""
        image = x["image"].to(self.device).float()
        rgb = image.flip(0) if self.input_format == "BGR" else image
        height, width = probs.shape[-2:]
        p = probs.float() / 255.0 if probs.dtype == torch.uint8 else probs.float()
        regions = chip_regions(x["instances"].gt_boxes.tensor.to(self.device).float()[keep], self.chips["context"])
        out_regions = regions * regions.new_tensor([width / image.shape[-1], height / image.shape[-2]]).repeat(2)
        size, batch, refined = self.chips["size"], self.chips["test_batch"], []
        for chunk, out_chunk, p_chunk in zip(regions.split(batch), out_regions.split(batch), p.split(batch)):
            q = colour_crf(crop_own_chips(p_chunk, out_chunk, size), crop_chips(rgb, chunk, size), **self.chips["crf"])
            refined.append(paste_chip_probs(q, out_chunk, height, width))
        return torch.cat(refined) if refined else probs

    def _painted(self, masks, boxes, classes, height, width):
        """(L+1, H, W) one-hot map of the per-box masks, the smaller box winning where they overlap."""
        label = torch.zeros((height, width), dtype=torch.long, device=self.device)
        if len(masks):
            owner, claimed = smallest_box_owner(masks, boxes)
            label = torch.where(claimed, classes[owner] + 1, label)
        sem_seg = torch.zeros((self.num_classes + 1, height, width), dtype=torch.float16, device=self.device)
        return sem_seg.scatter_(0, label[None], 1.0)
