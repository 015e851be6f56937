"""export.source: the header and annotations of datasets without a source JSON."""
from detectron2.data import Metadata
from detectron2.structures import BoxMode

from box2seg.export import Source


def test_datasets_without_a_source_json_get_a_header_from_their_records():
    meta = Metadata(name="x", thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={"n01": 0, "n02": 1})

    def make(box, category, crowd, ann_id):
        return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": category, "iscrowd": crowd, "id": ann_id}

    dicts = [
        {"file_name": "/data/voc/JPEGImages/a.jpg", "image_id": "a", "height": 10, "width": 20, "annotations": [
            make([1.0, 2.0, 5.5, 9.0], 1, 0, "a/0"), make([0.0, 0.0, 4.0, 4.0], 0, 1, "a/1")]},
        {"file_name": "/data/voc/JPEGImages/sub/b.jpg", "image_id": "b", "height": 8, "width": 8, "annotations": [
            make([0.1, 0.2, 0.4, 0.7], 0, 0, "b/0")]},
    ]
    source = Source("x", dicts, meta)
    assert source.header["images"] == [{"id": "a", "file_name": "a.jpg", "height": 10, "width": 20},
                                       {"id": "b", "file_name": "sub/b.jpg", "height": 8, "width": 8}]
    assert source.header["categories"] == [{"id": "n01", "name": "cat"}, {"id": "n02", "name": "dog"}]
    order, ann = source.annotation(0, dicts[0], 0, {"size": [10, 20], "counts": "x"}, 7, "grabcut")
    assert order == 0 and ann == {"id": "a/0", "image_id": "a", "bbox": [1.0, 2.0, 4.5, 7.0], "category_id": "n02",
                                  "iscrowd": 0, "segmentation": {"size": [10, 20], "counts": "x"}, "area": 7,
                                  "mask_source": "grabcut"}
    order, ann = source.annotation(0, dicts[0], 1)
    assert order == 1 and ann["iscrowd"] == 1 and ann["area"] == 16.0 and "segmentation" not in ann
    order, ann = source.annotation(1, dicts[1], 0, {}, 0, "ellipse")
    assert order == 2 and ann["bbox"] == [0.1, 0.2, 0.3, 0.5]
