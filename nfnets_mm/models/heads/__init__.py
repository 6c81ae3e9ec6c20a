from .nfnet_cls_head import NFNetClsHead

__all__ = ['NFNetClsHead']
