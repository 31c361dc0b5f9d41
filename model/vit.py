"""ViT-S/16 (Dosovitskiy et al. 2021) with DeiT-S's shape (Touvron et al. 2021), the backbone of SEE.

Patch 16, width 384, depth 12, 6 heads, MLP 1536 (GELU), class token, pre-norm LayerNorm (eps 1e-6),
no classifier head. Blocks and parameters carry timm's names (LayerNorm weight/bias are Gluon's
gamma/beta), so tools/convert_timm_vit.py only renames those. Any input size works: the 14x14 grid
of position embeddings (224 px) is resized bilinearly (align_corners=False) to the patch grid.
"""
import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from utils.errors import UserError

from .weights import load_into, pretrained_file

# timm's trunc_normal(std=.02) for tokens and linear layers, without the truncation at 2 std
INIT = mx.init.Normal(0.02)


class PatchEmbed(HybridBlock):
    """(B, 3, H, W) -> (B, dim, H/patch, W/patch): one linear map per non-overlapping patch."""

    def __init__(self, patch, dim, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.proj = nn.Conv2D(dim, patch, strides=patch, in_channels=3, weight_initializer=INIT)

    def hybrid_forward(self, F, x):
        return self.proj(x)


class Attention(HybridBlock):
    """Multi-head self-attention (B, N, dim) -> (B, N, dim); qkv's outputs are ordered (3, heads, dim/heads)."""

    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        with self.name_scope():
            self.qkv = nn.Dense(3 * dim, flatten=False, in_units=dim, weight_initializer=INIT)
            self.proj = nn.Dense(dim, flatten=False, in_units=dim, weight_initializer=INIT)

    def hybrid_forward(self, F, x):
        qkv = F.reshape(self.qkv(x), (0, 0, 3, self.heads, -1))                 # (B, N, 3, h, D)
        qkv = F.reshape(F.transpose(qkv, (2, 0, 3, 1, 4)), (3, -3, 0, 0))       # (3, B h, N, D)
        q, k, v = F.split(qkv, num_outputs=3, axis=0, squeeze_axis=True)
        attention = F.softmax(F.batch_dot(q, k, transpose_b=True) * self.scale, axis=-1)   # (B h, N, N)
        out = F.reshape(F.batch_dot(attention, v), (-4, -1, self.heads, -2))    # (B, h, N, D)
        return self.proj(F.reshape(F.transpose(out, (0, 2, 1, 3)), (0, 0, -3)))


class Mlp(HybridBlock):
    def __init__(self, dim, hidden, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.fc1 = nn.Dense(hidden, flatten=False, in_units=dim, weight_initializer=INIT)
            self.act = nn.GELU()                                                # exact (erf) GELU
            self.fc2 = nn.Dense(dim, flatten=False, in_units=hidden, weight_initializer=INIT)

    def hybrid_forward(self, F, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(HybridBlock):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, heads, hidden, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.norm1 = nn.LayerNorm(epsilon=1e-6, in_channels=dim)
            self.attn = Attention(dim, heads)
            self.norm2 = nn.LayerNorm(epsilon=1e-6, in_channels=dim)
            self.mlp = Mlp(dim, hidden)

    def hybrid_forward(self, F, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_grid(F, grid, like):
    """Position embeddings (1, dim, g, g) resized to the patch grid of ``like`` (B, dim, h, w)."""
    return F.contrib.BilinearResize2D(grid, like=like, mode='like', align_corners=False)


class VisionTransformer(HybridBlock):
    """``net(images (B, 3, H, W)) -> (B, dim, 1, 1)``: the class token after the final LayerNorm.

    Shaped as a 1x1 feature map so that EmbeddingNet's global pooling passes it through unchanged.
    """

    def __init__(self, image_size=224, patch=16, dim=384, depth=12, heads=6, mlp_ratio=4, **kwargs):
        super().__init__(**kwargs)
        self.grid = image_size // patch
        with self.name_scope():
            self.cls_token = self.params.get('cls_token', shape=(1, 1, dim), init=INIT)
            self.pos_embed = self.params.get('pos_embed', shape=(1, 1 + self.grid ** 2, dim), init=INIT)
            self.patch_embed = PatchEmbed(patch, dim)
            self.blocks = nn.HybridSequential()
            for _ in range(depth):
                self.blocks.add(Block(dim, heads, dim * mlp_ratio))
            self.norm = nn.LayerNorm(epsilon=1e-6, in_channels=dim)

    def hybrid_forward(self, F, x, cls_token, pos_embed):
        x = self.patch_embed(x)                                                           # (B, dim, h, w)
        pos_cls = F.slice_axis(pos_embed, axis=1, begin=0, end=1)                         # (1, 1, dim)
        pos_grid = F.reshape(F.slice_axis(pos_embed, axis=1, begin=1, end=None), (1, self.grid, self.grid, -1))
        x = F.broadcast_add(x, resize_grid(F, F.transpose(pos_grid, (0, 3, 1, 2)), x))
        x = F.transpose(F.reshape(x, (0, 0, -1)), (0, 2, 1))                             # (B, N, dim)
        cls = F.broadcast_like(cls_token + pos_cls, x, lhs_axes=(0,), rhs_axes=(0,))     # (B, 1, dim)
        x = self.norm(self.blocks(F.concat(cls, x, dim=1)))
        return F.reshape(F.slice_axis(x, axis=1, begin=0, end=1), (0, -1, 1, 1))


def vit_small_patch16(pretrained=True, pretrained_path=None, ctx=mx.cpu()):
    """ViT-S/16 trunk: converted timm/DeiT weights from ``pretrained_path``, or random init."""
    net = VisionTransformer()
    if pretrained and not pretrained_path:
        raise UserError("gluoncv's store has no ViT-S/16: convert timm's deit_small_patch16_224 with "
                        'python3 -m tools.convert_timm_vit and pass --pretrained_path FILE, or train from scratch '
                        'with --pretrained false')
    if pretrained_path:
        load_into(net, pretrained_file('vit_small_patch16', pretrained_path), 'vit_small_patch16', ctx)
    else:
        net.initialize(ctx=ctx)
    return net
