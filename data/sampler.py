"""The official EE class-balanced sampler: batches of batch_size/num_instances classes."""
from collections import defaultdict

import mxnet as mx
import numpy as np



def check_batch_layout(batch_size, num_instances):
    """ValueError unless a batch is whole groups of num_instances images of a class."""
    if num_instances < 1 or batch_size < 1:
        raise ValueError("batch_size and num_instances must be positive, got %d and %d" % (batch_size, num_instances))
    if batch_size % num_instances != 0:
        raise ValueError("batch_size (%d) must be a multiple of num_instances (%d)" % (batch_size, num_instances))


class ClassBalancedSampler(mx.gluon.data.Sampler):
    """Yields image indices in groups of num_instances images of one class.

    labels: (N,) int class label of every image.
    batch_size: images per batch, a multiple of num_instances.
    num_instances: images per class in a batch (consecutive indices).
    max_examples: indices per pass over the sampler ("one epoch"); default
        number of classes x num_instances, as in the official code.

    Procedure (identical to the official one, draw for draw on numpy's global RNG): permute all
    image indices; walk the permutation and, for each image whose class is not yet in the current
    batch, emit it followed by num_instances-1 images drawn from all images of its class (itself
    included), without replacement unless the class has fewer than num_instances-1 images. The set
    of classes in the current batch is cleared when a batch is complete and at the start of every
    new permutation. Stops once max_examples indices are emitted.

    A batch that straddles two permutations may repeat a class; on real data sets one permutation
    yields far more groups than an epoch needs, so this does not happen in practice.
    Use with ``DataLoader(..., batch_size=batch_size, last_batch='discard')``.
    """

    def __init__(self, labels, batch_size, num_instances, max_examples=None):
        labels = np.asarray(labels).reshape(-1)
        check_batch_layout(batch_size, num_instances)
        self.index_by_class = defaultdict(list)
        for idx, label in enumerate(labels.tolist()):
            self.index_by_class[label].append(idx)
        classes_per_batch = batch_size // num_instances
        if len(self.index_by_class) < classes_per_batch:
            raise ValueError("a batch needs batch_size / num_instances = %d classes but the training split has "
                             "only %d" % (classes_per_batch, len(self.index_by_class)))
        if max_examples is None:
            max_examples = len(self.index_by_class) * num_instances
        if max_examples < batch_size:
            raise ValueError("max_examples (%d) is smaller than batch_size (%d): an epoch would hold no full batch"
                             % (max_examples, batch_size))
        self.labels = labels.tolist()
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.max_examples = int(max_examples)

    def __iter__(self):
        ret = []
        while len(ret) < self.max_examples:
            in_batch = set()
            for i in np.random.permutation(len(self.labels)):
                label = self.labels[i]
                if label in in_batch:
                    continue
                in_batch.add(label)
                same_class = self.index_by_class[label]
                replace = len(same_class) < self.num_instances - 1
                extra = np.random.choice(same_class, size=self.num_instances - 1, replace=replace)
                ret.append(int(i))
                ret.extend(int(j) for j in extra)
                if len(ret) >= self.max_examples:
                    break
                if len(ret) % self.batch_size == 0:
                    in_batch = set()
        return iter(ret)

    def __len__(self):
        # Whole groups are emitted, so the count rounds max_examples up to a multiple of num_instances.
        return -(-self.max_examples // self.num_instances) * self.num_instances
