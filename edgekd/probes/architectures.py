"""Published networks rebuilt layer for layer from their names, to count their work per op class.

ST's model zoo publishes latencies of image classifiers whose .tflite files may not be
redistributed (../shared/reference-models/st-model-zoo/README.md); their architectures are
standard, so each is rebuilt here as the list of ops its int8 .tflite file holds, following the
zoo's own Keras definitions (image_classification/src/models/*.py of
STMicroelectronics/stm32ai-modelzoo, and keras.applications for ResNet50 v2): batch norms and
activations fold into the convolution before them, ZeroPadding2D becomes PAD,
GlobalAveragePooling2D becomes MEAN, Flatten and Reshape are views. Weights do not matter, only
shapes. `rebuild(model, resolution, dataset)` gives the ops of a table row's network,
`family(model)` the architecture family cross-validation leaves out together.
"""
import re
from dataclasses import dataclass

from ..errors import EdgekdError


@dataclass
class Layer:
    """One op of a rebuilt network, with what mcu_latency.layer_features needs."""
    name: str                # TFLite builtin op name
    outputs: int             # output elements
    channels: int            # output channels
    macs: int = 0
    kernel: tuple = ()       # (kh, kw) of a convolution


class Net:
    """A network built op by op on a running (height, width, channels) activation."""

    def __init__(self, height: int, width: int, channels: int):
        self.shape = (height, width, channels)
        self.layers = []

    def _add(self, name, shape, macs=0, kernel=()):
        self.shape = shape
        self.layers.append(Layer(name, shape[0] * shape[1] * shape[2], shape[2], macs, kernel))
        return shape

    @staticmethod
    def _size(n, k, stride, padding):
        return -(-n // stride) if padding == "same" else (n - k) // stride + 1

    def conv(self, filters, k=1, stride=1, padding="same"):
        h, w, c = self.shape
        out = (self._size(h, k, stride, padding), self._size(w, k, stride, padding), filters)
        return self._add("CONV_2D", out, out[0] * out[1] * filters * k * k * c, (k, k))

    def depthwise(self, k=3, stride=1, padding="same"):
        h, w, c = self.shape
        out = (self._size(h, k, stride, padding), self._size(w, k, stride, padding), c)
        return self._add("DEPTHWISE_CONV_2D", out, out[0] * out[1] * c * k * k, (k, k))

    def pad(self, before, after):
        h, w, c = self.shape
        return self._add("PAD", (h + before + after, w + before + after, c))

    def pool(self, name, k, stride, padding="valid"):
        h, w, c = self.shape
        return self._add(name, (self._size(h, k, stride, padding), self._size(w, k, stride, padding), c))

    def elementwise(self, name, shape=None):
        """An op whose output has the shape of its input (ADD, MUL, LOGISTIC, ...) or `shape`."""
        return self._add(name, shape or self.shape)

    def mean(self):
        return self._add("MEAN", (1, 1, self.shape[2]))

    def dense(self, units):
        c = self.shape[0] * self.shape[1] * self.shape[2]
        return self._add("FULLY_CONNECTED", (1, 1, units), units * c)

    def classifier(self, classes, softmax=True):
        """The zoo's heads: two classes are one sigmoid unit (Dense(1)), more a softmax."""
        self.dense(1 if classes <= 2 else classes)
        self.elementwise("LOGISTIC" if classes <= 2 else "SOFTMAX")


def mobilenet_v1(net, alpha, classes):
    net.conv(int(32 * alpha), 3, 2)
    for filters, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
                            (1024, 2), (1024, 1)):
        if stride == 2:  # ZeroPadding2D(((0, 1), (0, 1))) then a 'valid' depthwise
            net.pad(0, 1)
        net.depthwise(3, stride, "same" if stride == 1 else "valid")
        net.conv(int(filters * alpha))
    net.mean()
    net.classifier(classes)


def _divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobilenet_v2(net, alpha, classes):
    net.conv(_divisible(32 * alpha), 3, 2)
    blocks = [(16, 1, 1)] + [(24, s, 6) for s in (2, 1)] + [(32, s, 6) for s in (2, 1, 1)] \
        + [(64, s, 6) for s in (2, 1, 1, 1)] + [(96, 1, 6)] * 3 + [(160, s, 6) for s in (2, 1, 1)] + [(320, 1, 6)]
    for filters, stride, expansion in blocks:
        channels = net.shape[2]
        out = _divisible(int(filters * alpha))
        if expansion > 1:
            net.conv(expansion * channels)
        if stride == 2:  # ZeroPadding2D(correct_pad): one row and column before, one after
            net.pad(0, 1)
        net.depthwise(3, stride, "same" if stride == 1 else "valid")
        net.conv(out)
        if stride == 1 and channels == out:
            net.elementwise("ADD")
    net.conv(_divisible(1280 * alpha) if alpha > 1 else 1280)
    net.mean()
    net.classifier(classes)


def fd_mobilenet(net, alphas, classes):
    """FD-MobileNet: MobileNet v1's blocks with fast downsampling; `alphas` one width per layer."""
    net.conv(int(32 * alphas[0]), 3, 2)
    for (filters, stride), alpha in zip(((64, 2), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 4,
                                         (1024, 1)), alphas[1:]):
        net.depthwise(3, stride)
        net.conv(int(filters * alpha))
    net.mean()
    net.conv(classes)  # Conv2D(classes, 1x1) on the pooled features
    net.elementwise("SOFTMAX")


ST_FD_MOBILENET_ALPHAS = (0.5, 0.75, 0.625, 0.5, 0.375, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25)


def squeezenet_v11(net, classes):
    net.conv(64, 3, 2, "valid")
    net.pool("MAX_POOL_2D", 3, 2)
    for squeeze, expand, pool in ((16, 64, False), (16, 64, True), (32, 128, False), (32, 128, True),
                                  (48, 192, False), (48, 192, False), (64, 256, False), (64, 256, False)):
        h, w, _ = net.conv(squeeze)
        net.conv(expand)
        net.shape = (h, w, squeeze)
        net.conv(expand, 3)
        net.elementwise("CONCATENATION", (h, w, 2 * expand))
        if pool:
            net.pool("MAX_POOL_2D", 3, 2)
    net.conv(classes)
    net.mean()
    net.elementwise("SOFTMAX")


def resnet_v1(net, depth, classes):
    """The CIFAR ResNet v1 (depth 6n + 2: 16, 32, 64 filters, n blocks each), MLPerf Tiny's ResNet-8."""
    net.conv(16, 3)
    for stack, filters in enumerate((16, 32, 64)):
        for block in range((depth - 2) // 6):
            stride = 2 if stack > 0 and block == 0 else 1
            shape_in = net.shape
            net.conv(filters, 3, stride)
            out = net.conv(filters, 3)
            if stride == 2:  # the 1x1 projection of the shortcut
                net.shape = shape_in
                net.conv(filters, 1, 2)
            net.elementwise("ADD", out)
    net.pool("AVERAGE_POOL_2D", 8, 8)
    net.classifier(classes)


def resnet50_v2(net, classes):
    """keras.applications.ResNet50V2: pre-activation bottlenecks; a batch norm before a
    convolution cannot fold into it, so it stays as MUL and ADD."""
    net.pad(3, 3)
    net.conv(64, 7, 2, "valid")
    net.pad(1, 1)
    net.pool("MAX_POOL_2D", 3, 2)
    for filters, blocks, stride in ((64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1)):
        for block in range(blocks):
            block_stride = stride if block == blocks - 1 else 1
            shape_in = net.shape
            net.elementwise("MUL")  # pre-activation batch norm (+ ReLU fused into the ADD)
            preact = net.elementwise("ADD")
            if block == 0:
                net.conv(4 * filters, 1, block_stride)
            elif block_stride > 1:
                net.shape = shape_in
                net.pool("MAX_POOL_2D", 1, block_stride)
            shortcut = net.shape
            net.shape = preact
            net.conv(filters)
            net.pad(1, 1)
            net.conv(filters, 3, block_stride, "valid")
            net.conv(4 * filters)
            net.elementwise("ADD", shortcut)
    net.elementwise("MUL")
    net.elementwise("ADD")
    net.mean()
    net.classifier(classes)


def st_efficientnet_lc_v1(net, classes):
    """ST's EfficientNet-style network: width 0.45, expansion 3, ReLU6, squeeze-and-excitation."""
    def filters(n):
        return _divisible(n * 0.45)

    net.conv(filters(32), 3, 2)
    channels = filters(32)
    stages = ((16, 1, 1, 3), (24, 2, 2, 3), (40, 2, 2, 5), (80, 3, 2, 3), (112, 3, 1, 5), (192, 4, 2, 5), (320, 1, 1, 3))
    for stage, (out, repeats, stride, k) in enumerate(stages):
        expansion = 1 if stage == 0 else 3
        for i in range(repeats):
            block_stride = stride if i == 0 else 1
            expanded = channels * expansion
            if expansion != 1:
                net.conv(expanded)
            x = net.depthwise(k, block_stride)
            net.mean()  # squeeze and excitation: pool, two 1x1 convolutions, clip, sigmoid, scale
            net.conv(max(1, int(channels * 0.25)))
            net.conv(expanded)
            net.elementwise("MINIMUM")
            net.elementwise("MAXIMUM")
            net.elementwise("LOGISTIC")
            net.elementwise("MUL", x)
            net.conv(filters(out))
            if block_stride == 1 and channels == filters(out):
                net.elementwise("ADD")
            channels = filters(out)
    net.conv(filters(1280))
    net.mean()
    net.classifier(classes)


def st_mnist_v1(net, classes):
    net.conv(16, 3, 2)
    net.depthwise(3)
    net.conv(32, 3)
    net.depthwise(3, 2)
    net.conv(64)
    net.mean()
    net.classifier(classes)


def tiny_yolo_v2(net, classes):
    """Darknet's yolov2-tiny (its COCO configuration), the zoo's tiny_yolo_v2 and yolov2t: 3 x 3
    convolutions of 16 to 512 filters, each followed by a leaky ReLU and a 2 x 2 max pool (the
    last of stride 1), then 1024 and 512 filters and a 1 x 1 head of 5 anchors x (5 + classes).
    11,024,304 weights: with their int32 biases, the 10,776 KiB the zoo publishes."""
    for i, filters in enumerate((16, 32, 64, 128, 256, 512)):
        net.conv(filters, 3)
        net.elementwise("LEAKY_RELU")
        net.pool("MAX_POOL_2D", 2, 2 if i < 5 else 1, "valid" if i < 5 else "same")
    for filters in (1024, 512):
        net.conv(filters, 3)
        net.elementwise("LEAKY_RELU")
    net.conv(5 * (5 + classes))


def _alpha(model: str) -> float:
    return float(re.search(r" (\d\.\d+)", model).group(1))


# One row per family: the pattern its table names match, and how to build one of its networks
# from the table's model name. The patterns are tried in order.
FAMILIES = (
    ("FD-MobileNet", r"^ST FdMobileNet", lambda net, m, k: fd_mobilenet(net, ST_FD_MOBILENET_ALPHAS, k)),
    ("FD-MobileNet", r"^FdMobileNet", lambda net, m, k: fd_mobilenet(net, [_alpha(m)] * 12, k)),
    ("MobileNet v1", r"^MobileNet v1", lambda net, m, k: mobilenet_v1(net, _alpha(m), k)),
    ("MobileNet v2", r"^MobileNet v2", lambda net, m, k: mobilenet_v2(net, _alpha(m), k)),
    ("SqueezeNet 1.1", r"^SqueezeNet v1\.1", lambda net, m, k: squeezenet_v11(net, k)),
    ("ResNet v1 (CIFAR)", r"^ResNet v1 \d+", lambda net, m, k: resnet_v1(net, int(m.split()[2]), k)),
    ("ResNet50 v2", r"^ResNet50 v2", lambda net, m, k: resnet50_v2(net, k)),
    ("ST EfficientNet LC v1", r"^ST EfficientNet LC v1", lambda net, m, k: st_efficientnet_lc_v1(net, k)),
    ("ST MNIST v1", r"^ST MNIST", lambda net, m, k: st_mnist_v1(net, k)),
    ("Tiny YOLO v2", r"^(tiny_yolo_v2|yolov2t)$", lambda net, m, k: tiny_yolo_v2(net, k)),
)
# Families of the networks the table gives as .tflite files (analysed as they are).
FILE_FAMILIES = (("MiniResNet", r"^miniresnet"), ("YAMNet", r"^yamnet"))
# Classes of the zoo's training sets (the classifier's width); ImageNet models keep Keras's 1000.
CLASSES = {"flowers": 5, "tf_flowers": 5, "food101": 101, "imagenet": 1000, "cifar 10": 10, "cifar 100": 100,
           "emnist-byclass": 62, "person": 2, "coco person": 1}


def family(model: str) -> str | None:
    """The architecture family of a table's model name (None: not one edgekd rebuilds or reads)."""
    for name, pattern, _ in FAMILIES:
        if re.search(pattern, model):
            return name
    for name, pattern in FILE_FAMILIES:
        if re.search(pattern, model, re.IGNORECASE):
            return name
    return None


def rebuild(model: str, resolution: str, dataset: str) -> list:
    """The ops of a published network: its table name ('MobileNet v2 0.35 fft'), input
    ('224x224x3') and training set (for the classifier's width)."""
    h, w, c = (int(v) for v in resolution.split("x"))
    classes = CLASSES.get(dataset.lower())
    if classes is None:
        raise EdgekdError(f"no class count known for the data set '{dataset}'")
    for _, pattern, build in FAMILIES:
        if re.search(pattern, model):
            net = Net(h, w, c)
            build(net, model, classes)
            return net.layers
    raise EdgekdError(f"edgekd does not rebuild '{model}'")
